"""A strict device-array double: CuPy's rules on the CPU, for testing the trainer's CuPy path.

CuPy's most common failures show without a GPU. This namespace wraps NumPy arrays in
:class:`DeviceArray`, which, like ``cupy.ndarray``,

* refuses implicit conversion to NumPy (``np.asarray(x)``, ``__array__``), raising ``TypeError``;
* converts to the host only explicitly (``x.get()``, ``asnumpy(x)``) or as a Python scalar
  (``float(x)``, ``int(x)``, ``bool(x)``, ``x.item()``): every such conversion is a device-to-host
  transfer and is counted in :data:`TRANSFERS`;
* dispatches NumPy functions called on it (NEP 18 / ``__array_ufunc__``) to this namespace when
  CuPy provides them, and raises naming the function otherwise.

The namespace offers only functions on the allow-list :data:`ALLOWED`, taken from CuPy's
documentation ("Comparison Table" of NumPy and CuPy routines, and the ufunc list). Anything else,
including ``random`` (device-side random numbers would differ from NumPy's) and the ufunc methods
``at``/``reduce``/``outer`` (CuPy offers them for selected ufuncs only), raises
``AttributeError`` naming the function. Arithmetic runs in NumPy in the same order as on the host,
so results equal NumPy's bit for bit.

Use: ``connsim.trainer.backend.register_backend("strict", lambda: strict)`` then
``TrainConfig(backend="strict")``.
"""

from __future__ import annotations

import numpy as np

# CuPy routines the double provides (all exist in CuPy >= 13; see the module docstring)
ALLOWED = frozenset("""
asarray array asnumpy zeros ones empty full zeros_like ones_like empty_like full_like arange
linspace eye identity
reshape transpose moveaxis swapaxes stack concatenate pad broadcast_to expand_dims squeeze flip
where clip take tile repeat
add subtract multiply divide true_divide negative power absolute abs sign exp log log1p expm1
sqrt square tanh maximum minimum greater greater_equal less less_equal equal not_equal
logical_and logical_or logical_not isfinite isnan isinf floor ceil rint
sum mean var std max min amax amin argmax argmin prod cumsum all any count_nonzero
matmul dot tensordot einsum outer
float16 float32 float64 int8 int16 int32 int64 uint8 bool_ dtype ndarray newaxis pi inf nan
""".split())

TRANSFERS = {"to_host": 0, "to_device": 0}


def reset() -> None:
    """Zero the transfer counters."""
    TRANSFERS["to_host"] = 0
    TRANSFERS["to_device"] = 0


def _unwrap(x):
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError("a NumPy array met a device array: move it with asarray() first "
                        "(CuPy does not mix host and device arrays)")
    return x


def _wrap(x):
    if isinstance(x, np.ndarray | np.generic) and not isinstance(x, np.dtype):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


class DeviceArray:
    """An array that lives "on the device": NumPy storage, CuPy's conversion rules."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- explicit and scalar conversions (counted)
    def get(self) -> np.ndarray:
        TRANSFERS["to_host"] += 1
        return self._a.copy()

    def item(self):
        TRANSFERS["to_host"] += 1
        return self._a.item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        raise TypeError("a device array cannot be used as an index; convert with int() first")

    def __bool__(self):
        if self._a.size != 1:
            raise ValueError("the truth value of a device array with more than one element is "
                             "ambiguous")
        return bool(self.item())

    # -- implicit conversion is refused, as in CuPy
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __iter__(self):
        raise TypeError("iterating over a device array transfers element by element; index it "
                        "or use .get()")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            raise AttributeError(f"numpy.{ufunc.__name__}.{method} is not provided by CuPy "
                                 "(ufunc methods exist for selected ufuncs only)")
        if ufunc.__name__ not in ALLOWED:
            raise AttributeError(f"numpy.{ufunc.__name__} is not provided by CuPy")
        return _wrap(ufunc(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if name not in ALLOWED:
            raise AttributeError(f"numpy.{name} is not provided by CuPy")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # -- attributes
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"

    # -- methods CuPy arrays have
    def reshape(self, *shape, **kw):
        return DeviceArray(self._a.reshape(*shape, **kw))

    def transpose(self, *axes):
        return DeviceArray(self._a.transpose(*axes))

    def astype(self, dtype, **kw):
        return DeviceArray(self._a.astype(dtype, **kw))

    def copy(self):
        return DeviceArray(self._a.copy())

    def ravel(self):
        return DeviceArray(self._a.ravel())

    def _reduce(name):
        def method(self, *args, **kwargs):
            return _wrap(getattr(self._a, name)(*_unwrap(args), **_unwrap(kwargs)))
        method.__name__ = name
        return method

    sum = _reduce("sum")
    mean = _reduce("mean")
    var = _reduce("var")
    std = _reduce("std")
    max = _reduce("max")
    min = _reduce("min")
    argmax = _reduce("argmax")
    argmin = _reduce("argmin")
    all = _reduce("all")
    any = _reduce("any")
    prod = _reduce("prod")
    del _reduce

    # -- indexing
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key)] = _unwrap(value)

    # -- operators
    def _binary(op, reflected=False):
        def method(self, other):
            if isinstance(other, np.ndarray) and other.ndim > 0:
                raise TypeError(f"operand is a NumPy array: move it to the device first "
                                f"({op}, shape {other.shape})")
            if isinstance(other, list | tuple):
                raise TypeError(f"unsupported operand type: {type(other).__name__} ({op}); "
                                "CuPy takes device arrays and scalars")
            a, b = self._a, _unwrap(other)
            return _wrap(getattr(np, op)(b, a) if reflected else getattr(np, op)(a, b))
        return method

    __add__, __radd__ = _binary("add"), _binary("add", True)
    __sub__, __rsub__ = _binary("subtract"), _binary("subtract", True)
    __mul__, __rmul__ = _binary("multiply"), _binary("multiply", True)
    __truediv__, __rtruediv__ = _binary("true_divide"), _binary("true_divide", True)
    __pow__, __rpow__ = _binary("power"), _binary("power", True)
    __matmul__, __rmatmul__ = _binary("matmul"), _binary("matmul", True)
    __gt__, __ge__ = _binary("greater"), _binary("greater_equal")
    __lt__, __le__ = _binary("less"), _binary("less_equal")
    __eq__, __ne__ = _binary("equal"), _binary("not_equal")
    __and__, __or__ = _binary("logical_and"), _binary("logical_or")
    del _binary
    __hash__ = None

    def __neg__(self):
        return DeviceArray(-self._a)

    def __abs__(self):
        return DeviceArray(abs(self._a))

    def __invert__(self):
        return DeviceArray(~self._a)

    def __iadd__(self, other):
        self._a += _unwrap(other)
        return self

    def __isub__(self, other):
        self._a -= _unwrap(other)
        return self

    def __imul__(self, other):
        self._a *= _unwrap(other)
        return self

    def __itruediv__(self, other):
        self._a /= _unwrap(other)
        return self


class _Namespace:
    """The ``cupy``-like module: only :data:`ALLOWED` names exist."""

    ndarray = DeviceArray

    def __getattr__(self, name):
        if name not in ALLOWED:
            raise AttributeError(f"cupy.{name} is not provided by CuPy (not on the strict "
                                 "backend's allow-list)")
        if name == "asnumpy":
            return asnumpy
        if name in ("asarray", "array"):
            return asarray
        target = getattr(np, name)
        if isinstance(target, type) or not callable(target):
            return target  # dtypes, constants

        def call(*args, **kwargs):
            return _wrap(target(*_unwrap(args), **_unwrap(kwargs)))
        call.__name__ = name
        return call

    def __repr__(self):
        return "<strict device-array namespace>"


def asarray(a, dtype=None, **kwargs):
    """Host -> device (counted) or device -> device."""
    if isinstance(a, DeviceArray):
        return a if dtype is None else a.astype(dtype)
    TRANSFERS["to_device"] += 1
    return DeviceArray(np.array(a, dtype=dtype, copy=True))


def asnumpy(a):
    """Device -> host (counted)."""
    if isinstance(a, DeviceArray):
        return a.get()
    return np.asarray(a)


strict = _Namespace()
