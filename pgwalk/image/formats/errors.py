"""The image error, shared by physimage and the format readers."""


class ImageError(ValueError):
    """A malformed or truncated image; the message names the file."""


class AbsentError(LookupError):
    """Bytes asked for that the image does not hold (unmapped, or a frame
    absent from the dump); ``address`` is the first such address."""

    def __init__(self, msg, address):
        super().__init__(msg)
        self.address = address
