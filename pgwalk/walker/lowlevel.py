"""Low-level callables: C functions in ops slots, following the
``scipy.LowLevelCallable`` convention.

``pgwalk.LowLevelCallable(function, user_data=None, signature=None)`` accepts

* a ``PyCapsule`` whose name is the C signature (``SIGNATURES`` below);
* a ctypes function pointer (``CFUNCTYPE`` instance, or a function of a
  loaded library with ``restype``/``argtypes`` set);
* a cffi function pointer;
* a numba ``@cfunc`` (through its ``.ctypes`` pointer).

The signature is checked once, here; a mismatch raises ``ValueError`` listing
the accepted signatures.  Any pointer type is accepted for the ``walk`` and
the trailing ``user_data`` parameters.  ``user_data`` (None, an int address,
a ctypes object, a cffi pointer or a PyCapsule) arrives as the last argument.

The C view of ``walk`` is ``pgwalk_walk_t`` (ABI version 1): its first two
members are ``void *private`` and ``int action``; ``WalkStruct`` is the
ctypes mirror, for Python-side code that builds C callbacks.
"""

import ctypes

from . import _core

__all__ = [
    "ABI_VERSION", "LowLevelCallable", "SIGNATURES", "WalkStruct",
]

SIGNATURES = dict(_core.SIGNATURES)
ABI_VERSION = 1


class WalkStruct(ctypes.Structure):
    """ctypes mirror of ``pgwalk_walk_t`` (pgwalk/walker/_core.pxd)."""
    _fields_ = [("private", ctypes.c_void_p), ("action", ctypes.c_int),
                ("no_vma", ctypes.c_int), ("levels", ctypes.c_int), ("has_vma", ctypes.c_int),
                ("vma_start", ctypes.c_uint64), ("vma_end", ctypes.c_uint64),
                ("vma_flags", ctypes.c_uint64), ("pywalk", ctypes.c_void_p)]


def _norm(sig):
    """Canonical text of a C signature: pointers to the walk and to user data
    are any pointer; spaces do not matter; ``unsigned long`` is uint64_t."""
    sig = " ".join(sig.replace("(*)", "").split())
    for a, b in (("unsigned long long", "uint64_t"), ("unsigned long", "uint64_t"),
                 ("int32_t", "int"), ("struct pgwalk_walk *", "pgwalk_walk_t *")):
        sig = sig.replace(a, b)
    head, _, args = sig.partition("(")
    parts = [p.strip() for p in args.rstrip(")").split(",")]
    if len(parts) >= 2:
        parts[-1] = "void *" if parts[-1].endswith("*") else parts[-1]
        walk_at = -2
        if parts[walk_at].endswith("*"):
            parts[walk_at] = "pgwalk_walk_t *"
    parts = [p.replace(" *", "*").replace("*", " *") for p in parts]
    return f"{head.strip()} ({', '.join(parts)})"


_BY_SIG = {_norm(v): k for k, v in SIGNATURES.items()}


def _kind_of(signature):
    kind = _BY_SIG.get(_norm(signature))
    if kind is None:
        accepted = "\n  ".join(f"{k}: {v}" for k, v in SIGNATURES.items())
        raise ValueError(f"signature {signature!r} is not one pgwalk calls; accepted:\n  {accepted}")
    return kind


_CTYPES_NAMES = {ctypes.c_int: "int", ctypes.c_int32: "int", ctypes.c_uint64: "uint64_t",
                 ctypes.c_ulong: "uint64_t", ctypes.c_ulonglong: "uint64_t",
                 ctypes.c_void_p: "void *", None: "void"}


def _ctypes_name(t):
    if t in _CTYPES_NAMES:
        return _CTYPES_NAMES[t]
    if isinstance(t, type) and issubclass(t, ctypes._Pointer):
        inner = t._type_
        return f"{_CTYPES_NAMES.get(inner, getattr(inner, '__name__', 'void'))} *"
    return getattr(t, "__name__", repr(t))     # not a type pgwalk uses: _kind_of says so


def _ctypes_signature(fn):
    if getattr(fn, "argtypes", None) is None:
        raise ValueError("a ctypes function needs argtypes and restype set")
    return f"{_ctypes_name(fn.restype)} ({', '.join(_ctypes_name(t) for t in fn.argtypes)})"


def _pointer_value(obj, what):
    if obj is None:
        return 0
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if type(obj).__name__ == "PyCapsule":
        return _capsule_pointer(obj, None)
    if isinstance(obj, (ctypes._SimpleCData, ctypes.Structure, ctypes.Array)):
        if isinstance(obj, ctypes.c_void_p):
            return obj.value or 0
        return ctypes.addressof(obj)
    if isinstance(obj, ctypes._Pointer) or isinstance(obj, ctypes._CFuncPtr):
        return ctypes.cast(obj, ctypes.c_void_p).value or 0
    mod = type(obj).__module__ or ""
    if mod.startswith("_cffi_backend"):
        import cffi  # type: ignore[import-untyped]
        return int(cffi.FFI().cast("uintptr_t", obj))
    raise TypeError(f"{what}: cannot take a pointer from {type(obj).__name__}")


def _capsule_pointer(capsule, name):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    cname = get_name(capsule) if name is None else name.encode()
    return get_ptr(capsule, cname)


def _capsule_name(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    name = get_name(capsule)
    return name.decode() if name else ""


class LowLevelCallable:
    """A C function for an ops slot; see the module docstring."""

    __slots__ = ("function", "user_data", "signature", "kind", "__pgwalk_cfunc__")

    def __init__(self, function, user_data=None, signature=None):
        address, sig = self._unpack(function, signature)
        self.kind = _kind_of(sig)
        self.function = function
        self.user_data = user_data
        self.signature = SIGNATURES[self.kind]
        ctx = _pointer_value(user_data, "user_data")
        self.__pgwalk_cfunc__ = _core._cfunc_from_address(address, ctx, self.kind, self)

    @staticmethod
    def _unpack(fn, signature):
        if type(fn).__name__ == "PyCapsule":
            name = _capsule_name(fn)
            sig = signature or name
            if signature is not None and _norm(signature) != _norm(name):
                raise ValueError(f"signature {signature!r} does not match the capsule's {name!r}")
            return _capsule_pointer(fn, name), sig
        if hasattr(fn, "ctypes") and hasattr(fn, "address"):          # numba cfunc
            fn = fn.ctypes
        if isinstance(fn, ctypes._CFuncPtr):
            sig = _ctypes_signature(fn)
            if signature is not None and _norm(signature) != _norm(sig):
                raise ValueError(f"signature {signature!r} does not match the ctypes prototype {sig!r}")
            return ctypes.cast(fn, ctypes.c_void_p).value, sig
        mod = type(fn).__module__ or ""
        if mod.startswith("_cffi_backend"):
            import cffi  # type: ignore[import-untyped]
            ffi = cffi.FFI()
            sig = ffi.getctype(ffi.typeof(fn))
            if signature is not None and _norm(signature) != _norm(sig):
                raise ValueError(f"signature {signature!r} does not match the cffi type {sig!r}")
            return int(ffi.cast("uintptr_t", fn)), sig
        if isinstance(fn, int) and signature is not None:
            return fn, signature
        raise ValueError("function must be a PyCapsule, a ctypes or cffi function pointer, "
                         "a numba cfunc, or an address with a signature; accepted signatures:\n  "
                         + "\n  ".join(f"{k}: {v}" for k, v in SIGNATURES.items()))

    def __repr__(self):
        return f"LowLevelCallable({self.function!r}, signature={self.signature!r})"
