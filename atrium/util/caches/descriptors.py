"""``@cached`` and ``@cached_list``: per-instance caches for async store methods.

    class RoomStore:
        @cached(max_entries=10_000)
        async def get_room_version_id(self, room_id: str) -> str: ...

        @cached_list("get_room_version_id", "room_ids")
        async def get_room_version_ids(self, room_ids: list[str]) -> dict[str, str]: ...

    await store.get_room_version_id(room_id)           # always a Deferred
    store.get_room_version_id.invalidate((room_id,))   # keys are tuples

Rules the callers rely on:
* The cache belongs to the store INSTANCE, created on first access: two
  stores in one process (two test servers) never share entries. On first
  access the per-instance wrapper is put in the instance ``__dict__``, so
  later accesses are a plain attribute look-up (store classes therefore need
  a ``__dict__``, i.e. no ``__slots__``).
* The key is the tuple of the first ``num_args`` arguments after ``self``
  (default: all of them), whether passed by position or keyword; arguments
  beyond ``num_args`` must not change the result.
* Calling always returns a Deferred, also on a hit. Every caller gets its own
  Deferred; concurrent callers of one key share one underlying call.
* Values are shared by every caller: treat them as immutable (never mutate a
  dict or list you got from a cache; copy it).
* Failures are not cached; a result that was invalidated while being
  computed is not stored (see ``deferred_cache``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

from twisted.internet import defer
from twisted.python.failure import Failure

from atrium.util.async_helpers import ObservableDeferred
from atrium.util.caches.deferred_cache import MISSING, DeferredCache, Key, as_deferred

P = ParamSpec("P")
R = TypeVar("R")

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class CachedMethod(Protocol[P, R]):
    """What ``store.method`` is once decorated with ``@cached``."""

    cache: DeferredCache[Any]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> defer.Deferred[R]: ...

    def invalidate(self, key: Key) -> None: ...

    def invalidate_many(self, prefix: Key) -> None: ...

    def invalidate_all(self) -> None: ...

    def prefill(self, key: Key, value: Any) -> None: ...


def _key_builder(
    qualname: str, params: list[inspect.Parameter], all_names: frozenset[str] | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]:
    """Build, once, a function mapping a call's (args, kwargs) to the values of ``params``.

    ``all_names`` is every keyword the function accepts (None: it takes **kwargs),
    so a misspelt keyword fails on a cache hit just as it would on a miss.
    """
    names = [p.name for p in params]
    defaults = [p.default for p in params]
    count = len(params)

    def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        given = len(args)
        if not kwargs:
            if given >= count:
                return args[:count]
        elif all_names is not None:
            for kw in kwargs:
                if kw not in all_names:
                    raise TypeError(f"{qualname}() got an unexpected keyword argument {kw!r}")
        values = list(args[:count])
        for index in range(given, count):
            name = names[index]
            if name in kwargs:
                values.append(kwargs[name])
            elif defaults[index] is not _EMPTY:
                values.append(defaults[index])
            else:
                raise TypeError(f"{qualname}() missing required argument {name!r}")
        for name in names[: min(given, count)]:
            if name in kwargs:
                raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
        return tuple(values)

    return build


def _signature_after_self(
    func: Callable[..., Any],
) -> tuple[list[inspect.Parameter], frozenset[str] | None]:
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].kind not in _POSITIONAL:
        raise TypeError(f"{func.__qualname__} must be a method taking self")
    rest = params[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest):
        all_names = None
    else:
        all_names = frozenset(
            p.name for p in rest if p.kind is not inspect.Parameter.POSITIONAL_ONLY
        )
    return rest, all_names


class CachedDescriptor(Generic[P, R]):
    """The class attribute left by ``@cached``; builds one cache per instance."""

    def __init__(
        self,
        func: Callable[Concatenate[Any, P], Awaitable[R]],
        max_entries: int,
        num_args: int | None,
        tree: bool,
        name: str | None,
    ) -> None:
        params, all_names = _signature_after_self(func)
        if num_args is None:
            num_args = len(params)
        if num_args > len(params) or any(p.kind not in _POSITIONAL for p in params[:num_args]):
            raise TypeError(
                f"@cached on {func.__qualname__}: the first {num_args} arguments after self "
                "must be plain positional arguments (not *args or keyword-only)"
            )
        if tree and num_args < 2:
            # A prefix of a one-element key is the whole key: a plain cache does that.
            raise TypeError(f"@cached(tree=True) on {func.__qualname__} needs num_args >= 2")
        self.orig = func
        self.max_entries = max_entries
        self.num_args = num_args
        self.tree = tree
        self.cache_name = name or func.__name__
        self.attr_name = func.__name__
        self.key_param_names = tuple(p.name for p in params[:num_args])
        self._make_key = _key_builder(func.__qualname__, params[:num_args], all_names)
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr_name = name

    def __get__(self, obj: Any, owner: type | None = None) -> CachedMethod[P, R]:
        if obj is None:
            return self  # type: ignore[return-value]
        wrapper = self._bind(obj)
        # A non-data descriptor: from now on the instance attribute wins and
        # this method is not called again for this instance.
        obj.__dict__[self.attr_name] = wrapper
        return wrapper

    def _bind(self, obj: Any) -> CachedMethod[P, R]:
        cache: DeferredCache[R] = DeferredCache(self.cache_name, self.max_entries, self.tree)
        func = self.orig
        num_args = self.num_args
        make_key = self._make_key
        metrics = cache.metrics
        lru_get = cache.lru.get
        succeed = defer.succeed

        def wrapper(*args: Any, **kwargs: Any) -> defer.Deferred[R]:
            # Hot path: called with exactly the key arguments, by position.
            if kwargs or len(args) != num_args:
                key = make_key(args, kwargs)
            else:
                key = args
            value = lru_get(key, MISSING, False)
            if value is not MISSING:
                metrics.hits += 1
                return succeed(value)
            pending = cache.lookup(key)
            if pending is not None:
                return pending
            return cache.compute(key, lambda: func(obj, *args, **kwargs))

        def invalidate(key: Key) -> None:
            cache.invalidate(self._check_key(key, exact=True))

        def invalidate_many(prefix: Key) -> None:
            cache.invalidate_many(self._check_key(prefix, exact=False))

        def prefill(key: Key, value: R) -> None:
            cache.prefill(self._check_key(key, exact=True), value)

        functools.update_wrapper(wrapper, func)
        w: Any = wrapper
        w.cache = cache
        w.invalidate = invalidate
        w.invalidate_many = invalidate_many
        w.invalidate_all = cache.invalidate_all
        w.prefill = prefill
        w.num_args = num_args
        return cast(CachedMethod[P, R], wrapper)

    def _check_key(self, key: Key, exact: bool) -> Key:
        # A bare string passed as a key would silently match nothing: refuse it.
        if not isinstance(key, tuple):
            raise TypeError(f"Cache keys of {self.cache_name} are tuples, got {key!r}")
        if len(key) > self.num_args or (exact and len(key) != self.num_args):
            raise TypeError(
                f"Cache {self.cache_name} takes keys of {self.num_args} elements, got {key!r}"
            )
        return key


def cached(
    max_entries: int = 1000,
    num_args: int | None = None,
    tree: bool = False,
    name: str | None = None,
) -> Callable[[Callable[Concatenate[Any, P], Awaitable[R]]], CachedDescriptor[P, R]]:
    """Cache an ``async def`` store method per instance; see the module docstring.

    ``name`` (default: the method name) names the cache for metrics and for
    replication (``CacheRegistry``). ``tree=True`` enables
    ``.invalidate_many(prefix)`` over the leading key elements.
    """

    def decorate(func: Callable[Concatenate[Any, P], Awaitable[R]]) -> CachedDescriptor[P, R]:
        return CachedDescriptor(func, max_entries, num_args, tree, name)

    return decorate


class CachedListDescriptor(Generic[R]):
    """The class attribute left by ``@cached_list``."""

    def __init__(
        self, func: Callable[..., Awaitable[Any]], cached_method_name: str, list_name: str
    ):
        params, all_names = _signature_after_self(func)
        names = [p.name for p in params]
        if list_name not in names:
            raise TypeError(f"@cached_list on {func.__qualname__}: no argument {list_name!r}")
        self.orig = func
        self.cached_method_name = cached_method_name
        self.list_name = list_name
        self.list_index = names.index(list_name)
        self.attr_name = func.__name__
        self._params = params
        self._all_names = all_names
        self._make_args: Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]] | None = None
        self._num_args = 0
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr_name = name
        self._resolve(owner)

    def _resolve(self, owner: type) -> None:
        """Check that our arguments line up with the item method's key, once per class."""
        target = inspect.getattr_static(owner, self.cached_method_name, None)
        if not isinstance(target, CachedDescriptor):
            raise TypeError(
                f"@cached_list on {self.orig.__qualname__}: {self.cached_method_name!r} "
                "is not a @cached method of the same class"
            )
        expected = list(target.key_param_names)
        ours = [p.name for p in self._params[: len(expected)]]
        if (
            len(ours) != len(expected)
            or not (self.list_index < len(expected))
            or any(
                a != b
                for i, (a, b) in enumerate(zip(ours, expected, strict=True))
                if i != self.list_index
            )
        ):
            raise TypeError(
                f"@cached_list on {self.orig.__qualname__}: its first arguments {ours} must be "
                f"the key arguments {expected} of {self.cached_method_name}, with "
                f"{self.list_name!r} in place of one of them"
            )
        self._num_args = len(expected)
        self._make_args = _key_builder(
            self.orig.__qualname__, self._params[: len(expected)], self._all_names
        )

    def __get__(
        self, obj: Any, owner: type | None = None
    ) -> Callable[..., defer.Deferred[dict[Any, R]]]:
        if obj is None:
            return self  # type: ignore[return-value]
        if self._make_args is None:
            self._resolve(type(obj))
        wrapper = self._bind(obj)
        obj.__dict__[self.attr_name] = wrapper
        return wrapper

    def _bind(self, obj: Any) -> Callable[..., defer.Deferred[dict[Any, R]]]:
        func = self.orig
        index = self.list_index
        list_name = self.list_name
        make_args = self._make_args
        assert make_args is not None
        # Goes through the item method's instance attribute, so it is that
        # instance's cache (created now if the item method was never called).
        cache: DeferredCache[R] = getattr(obj, self.cached_method_name).cache

        def wrapper(*args: Any, **kwargs: Any) -> defer.Deferred[dict[Any, R]]:
            key_args = make_args(args, kwargs)
            head, items, tail = key_args[:index], key_args[index], key_args[index + 1 :]
            results: dict[Any, R] = {}
            waiting: dict[Any, defer.Deferred[R]] = {}
            misses: dict[Any, Key] = {}
            for item in items:
                if item in results or item in waiting or item in misses:
                    continue
                key = (*head, item, *tail)
                value = cache.get_if_cached(key)
                if value is not MISSING:
                    cache.metrics.hits += 1
                    results[item] = value
                    continue
                d = cache.lookup(key)
                if d is not None:
                    waiting[item] = d
                else:
                    misses[item] = key
            if not waiting and not misses:
                return defer.succeed(results)
            return defer.ensureDeferred(
                _fetch(func, obj, cache, args, kwargs, index, list_name, results, waiting, misses)
            )

        functools.update_wrapper(wrapper, func)
        return wrapper


async def _fetch(
    func: Callable[..., Awaitable[Any]],
    obj: Any,
    cache: DeferredCache[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    index: int,
    list_name: str,
    results: dict[Any, Any],
    waiting: dict[Any, defer.Deferred[Any]],
    misses: dict[Any, Key],
) -> dict[Any, Any]:
    """The slow part of a ``@cached_list`` call: one batch call for the misses."""
    if misses:
        entries = {item: cache.begin(key) for item, key in misses.items()}
        miss_list = list(misses)
        if index < len(args):
            call_args, call_kwargs = (*args[:index], miss_list, *args[index + 1 :]), kwargs
        else:
            call_args, call_kwargs = args, {**kwargs, list_name: miss_list}
        try:
            batch_d = as_deferred(func(obj, *call_args, **call_kwargs))
        except Exception:
            batch_d = defer.fail()

        # Filling the item entries hangs off the batch Deferred itself, not off
        # this coroutine: if this caller is cancelled, the batch still
        # completes for the other callers waiting on the same entries.
        def _fill(batch: dict[Any, Any]) -> dict[Any, Any]:
            # Ids the batch did not return are cached as None, matching what
            # the item method returns for an unknown id, so they are not
            # queried again.
            for item, source in entries.items():
                source.callback(batch.get(item))
            return batch

        def _fail(failure: Failure) -> Failure:
            for source in entries.values():
                source.errback(failure)
            return failure

        batch_d.addCallbacks(_fill, _fail)
        batch = await ObservableDeferred(batch_d, consume_errors=True).observe()
        for item in miss_list:
            results[item] = batch.get(item)
    for item, d in waiting.items():
        results[item] = await d
    return results


def cached_list(
    cached_method_name: str, list_name: str
) -> Callable[[Callable[..., Awaitable[dict[Any, R]]]], CachedListDescriptor[R]]:
    """Batch version of a ``@cached`` method, sharing its per-instance cache.

    The decorated method's leading arguments must be the item method's key
    arguments, with ``list_name`` (an iterable of ids) in place of one of
    them. It is called only with the ids missing from the item cache and must
    return ``{id: value}``; ids it leaves out are cached (and returned) as
    ``None``. The call returns a Deferred of ``{id: value}`` for every id asked.
    """

    def decorate(func: Callable[..., Awaitable[dict[Any, R]]]) -> CachedListDescriptor[R]:
        return CachedListDescriptor(func, cached_method_name, list_name)

    return decorate
