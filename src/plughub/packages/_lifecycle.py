"""The lifecycle of installed plugins: uninstall, rollback, enable/disable, pin, cleanup.

``Installer`` (in ``_install``) inherits these operations; each takes the home's lock and runs
:func:`~plughub.packages.recover` first, and each changes the ``current`` pointer (the commit
point) before ``state.json``, like an install does.
"""

from __future__ import annotations

from pathlib import Path

from packaging.specifiers import SpecifierSet

from ..errors import PlughubError, UsageError
from ..host import permission_tokens
from ..manifest import MANIFEST_FILENAME, PluginManifest, load_manifest, semver_to_version
from ._store import PluginState, Store, recover

__all__ = ["Lifecycle", "satisfies"]


def satisfies(version: str, spec: str) -> bool:
    """Whether a semver ``version`` is in a PEP 440 range (``""`` accepts anything)."""
    if not spec:
        return True
    return SpecifierSet(spec).contains(semver_to_version(version), prereleases=True)


class Lifecycle:
    """Operations on installed plugins (mixed into ``Installer``)."""

    home: Path
    store: Store

    def _installed_manifests(self) -> dict[str, tuple[str, PluginManifest]]:
        """Every installed plugin's active (version, manifest)."""
        out: dict[str, tuple[str, PluginManifest]] = {}
        for pid in self.store.ids():
            version = self.store.current(pid)
            if version is None:
                continue
            try:
                m = load_manifest(self.store.version_dir(pid, version) / MANIFEST_FILENAME)
            except (PlughubError, OSError):
                continue
            out[pid] = (version, m)
        return out

    def _need(self, plugin_id: str) -> tuple[PluginState, str]:
        current = self.store.current(plugin_id)
        if current is None:
            raise UsageError(f"{plugin_id} is not installed")
        return self.store.state(plugin_id), current

    def dependents(self, plugin_id: str) -> list[str]:
        """Installed plugins whose active version depends on ``plugin_id``."""
        return sorted(
            pid
            for pid, (_v, m) in self._installed_manifests().items()
            if plugin_id in m.dependencies and pid != plugin_id
        )

    def uninstall(self, plugin_id: str, *, force: bool = False) -> list[str]:
        """Remove a plugin: every version, its state, grants and environments.

        Refused while another installed plugin depends on it, unless ``force``. Returns the
        removed versions.
        """
        with self.store.locked():
            recover(self.home)
            state, _current = self._need(plugin_id)
            users = self.dependents(plugin_id)
            if users and not force:
                raise UsageError(
                    f"{', '.join(users)} depend(s) on {plugin_id}; uninstall them first, "
                    "or force it (they will fail to load)"
                )
            self.store.deactivate(plugin_id)  # the commit point
            self.store.remove_plugin_dir(plugin_id)
            self.store.remove_envs(plugin_id)
            return sorted(state.versions, key=semver_to_version)

    def rollback(self, plugin_id: str, to: str | None = None) -> str:
        """Make the previous version (or ``to``) active again; returns it.

        The previous version is the one that was active before the current one, else the
        highest installed version below it.
        """
        with self.store.locked():
            recover(self.home)
            state, current = self._need(plugin_id)
            target = to or self._previous(state, current)
            if target is None:
                raise UsageError(f"{plugin_id} has no other installed version to roll back to")
            if target not in state.versions:
                raise UsageError(
                    f"{plugin_id} {target} is not installed (installed: "
                    f"{', '.join(sorted(state.versions, key=semver_to_version))})"
                )
            if target == current:
                return current
            if state.pinned is not None and state.pinned != target:
                raise UsageError(f"{plugin_id} is pinned at {state.pinned}; unpin it first")
            self._check_switch(plugin_id, target)
            self.store.switch(plugin_id, target)
            state.current = target
            state.note("rollback", version=target, previous=current)
            self.store.write_state(state)
            return target

    def _check_switch(self, plugin_id: str, target: str) -> None:
        """Refuse a version switch that would break a dependent or lacks a grant."""
        m = load_manifest(self.store.version_dir(plugin_id, target) / MANIFEST_FILENAME)
        for other, (_v, om) in self._installed_manifests().items():
            spec = om.dependencies.get(plugin_id)
            if other != plugin_id and spec and not satisfies(target, spec):
                raise UsageError(f"{other} needs {plugin_id} {spec}; {target} would break it")
        state = self.store.state(plugin_id)
        missing = [t for t in permission_tokens(m) if t not in state.granted]
        if missing:
            raise UsageError(f"{plugin_id} {target} needs ungranted permissions: {missing}")

    @staticmethod
    def _previous(state: PluginState, current: str) -> str | None:
        for event in reversed(state.history):
            prev = event.get("previous")
            if (
                event.get("version") == current
                and isinstance(prev, str)
                and prev in state.versions
                and prev != current
            ):
                return prev
        lower = [v for v in state.versions if semver_to_version(v) < semver_to_version(current)]
        return max(lower, key=semver_to_version) if lower else None

    def set_enabled(self, plugin_id: str, enabled: bool) -> bool:
        """Enable or disable a plugin (a disabled plugin is listed but never loads).

        Returns whether anything changed.
        """
        with self.store.locked():
            recover(self.home)
            state, _ = self._need(plugin_id)
            if state.enabled == enabled:
                return False
            state.enabled = enabled
            state.note("enable" if enabled else "disable")
            self.store.write_state(state)
            return True

    def enable(self, plugin_id: str) -> bool:
        return self.set_enabled(plugin_id, True)

    def disable(self, plugin_id: str) -> bool:
        return self.set_enabled(plugin_id, False)

    def pin(self, plugin_id: str, version: str | None = None) -> str:
        """Pin a plugin at ``version`` (default: the active one), activating it if needed.

        A pinned plugin is never upgraded (and not rolled back to another version) until
        :meth:`unpin`.
        """
        with self.store.locked():
            recover(self.home)
            state, current = self._need(plugin_id)
            target = version or current
            if target not in state.versions:
                raise UsageError(f"{plugin_id} {target} is not installed")
            if target != current:
                self._check_switch(plugin_id, target)
                self.store.switch(plugin_id, target)
                state.current = target
                state.note("rollback", version=target, previous=current)
            state.pinned = target
            state.note("pin", version=target)
            self.store.write_state(state)
            return target

    def unpin(self, plugin_id: str) -> bool:
        """Allow upgrades again; returns whether it was pinned."""
        with self.store.locked():
            recover(self.home)
            state, _ = self._need(plugin_id)
            if state.pinned is None:
                return False
            state.pinned = None
            state.note("unpin")
            self.store.write_state(state)
            return True

    def cleanup(self, plugin_id: str | None = None, *, keep: int = 1) -> dict[str, list[str]]:
        """Remove inactive versions and their environments, keeping the ``keep`` most
        recently installed inactive ones per plugin (rollback targets) and any pinned one.

        Without ``plugin_id``, every installed plugin. Returns removed versions per plugin.
        """
        if keep < 0:
            raise UsageError("keep must be >= 0")
        removed: dict[str, list[str]] = {}
        with self.store.locked():
            recover(self.home)
            ids = [plugin_id] if plugin_id else self.store.ids()
            for pid in ids:
                state, current = self._need(pid)
                inactive = sorted(
                    (v for v in state.versions if v not in (current, state.pinned)),
                    key=lambda v: (state.versions[v].installed_at, semver_to_version(v)),
                    reverse=True,
                )
                drop = inactive[keep:]
                if not drop:
                    continue
                for v in drop:
                    del state.versions[v]
                state.note("cleanup", removed=drop)
                self.store.write_state(state)  # first: a version missing from state is garbage
                for v in drop:
                    self.store.remove_version_dir(pid, v)
                self.store.remove_envs(pid, keep=set(state.versions))
                removed[pid] = drop
        return removed
