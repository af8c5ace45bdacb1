"""A plugin whose import raises a BaseException subclass that is not an Exception (nor SystemExit)."""


class FxAbort(BaseException):
    """What a misbehaving package might raise (pytest's Skipped, gevent's GreenletExit are of this kind)."""


raise FxAbort("fx_base_exc: aborting the import")
