"""Offline validation of rendered objects against Kubernetes' own OpenAPI schemas.

``kubernetes-validate`` ships the strict JSON schemas of every Kubernetes
release from 1.25 to 1.37 (strict: an unknown field is an error, as it is
for a server-side apply with field validation). No cluster, no network. It
checks shape and types, not meaning: a missing image or a NodePort outside
the cluster's range passes it, which is why the spec parser checks those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from modelseal.deploy.errors import DeployError
from modelseal.errors import MissingDependencyError

#: The Kubernetes minor versions whose strict schemas every rendered object passes.
SUPPORTED_KUBERNETES_VERSIONS: Final = tuple(f"1.{minor}" for minor in range(25, 38))


class ManifestValidationError(DeployError):
    """A rendered object does not pass a Kubernetes version's schema (a bug in the renderer)."""


def validate_manifests(
    manifests: Iterable[dict[str, Any]],
    versions: Sequence[str] = SUPPORTED_KUBERNETES_VERSIONS,
) -> None:
    """Check every object strictly against every version; the first failure is raised."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import VersionNotSupportedError
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            "validating manifests needs kubernetes-validate: pip install 'modelseal[deploy]'"
        ) from None
    objects = list(manifests)
    for version in versions:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                raise ManifestValidationError(
                    f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} fails Kubernetes "
                    f"{version}: {path}: {exc.message}"
                ) from None
            except (kubernetes_validate.SchemaNotFoundError, VersionNotSupportedError) as exc:
                raise ManifestValidationError(
                    f"{obj.get('kind')}: no Kubernetes {version} schema: {exc.message}"
                ) from None


__all__ = ["SUPPORTED_KUBERNETES_VERSIONS", "ManifestValidationError", "validate_manifests"]
