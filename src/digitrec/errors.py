"""One exception type for every failure a user can fix.

The CLI prints these as a single line (no traceback) and exits 2; the GUI and the
server show the message. Anything else escaping is a bug in digitrec.
"""


class DigitrecError(Exception):
    """A problem with the user's input, files or environment, with a message saying what to do."""


class DataError(DigitrecError):
    """Dataset files are missing, corrupt or fail their checksum."""


class CheckpointError(DigitrecError):
    """A checkpoint is missing, unreadable, or does not match its architecture."""


class ImageError(DigitrecError):
    """An input image cannot be decoded or is outside the accepted limits."""


class ImageTooLarge(ImageError):
    """An image over the pixel limit (the server answers 413, not 422)."""


class Interrupted(DigitrecError):
    """Training stopped on request (Ctrl-C) after saving a resumable state."""

    def __init__(self, run_dir, epoch: int, batch: int) -> None:
        where = f"in epoch {epoch + 1} after batch {batch}" if batch else f"after epoch {epoch}"
        super().__init__(
            f"Interrupted {where}; state saved. Resume with: digitrec train --resume {run_dir}"
        )
        self.run_dir = run_dir
