"""Why a flag gave its variant, as an OpenFeature reason, read from the flag's own config.

The variant's metadata says whether it is the default variant (``default``), whether the flag is
deployed (``deployed``) and which segment matched (``segmentName``). Whether that segment's
variant came from bucketing is in the segment's config, not in the result: a segment whose
``bucket`` can give different users different outcomes (several variants, or less than 100 % of
users allocated) is a SPLIT; a segment that gives every user it matches the same variant is a
TARGETING_MATCH. A flag's config comes from the client's flag set (its catalog), decoded the first
time a resolution of that flag needs it in a version.
"""

from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from openfeature.flag_evaluation import Reason

from ..variant import Variant

#: A bucket distribution's range covers the whole hash space when it is [0, 2**32 / 100].
FULL_DISTRIBUTION = 42949673
_SCALARS = (bool, int, float, str)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class FlagIndex:
    """One flag-set version's reasons, worked out per flag when a resolution first needs them.

    A flag's config is decoded from the version's catalog only then (in shared mode, straight
    from the mapped snapshot), so a version costs the provider nothing for flags it never
    resolves. Not locked: two threads that work out the same entry store equal values.
    """

    def __init__(self, flag_set: Any):
        self.catalog = getattr(flag_set, "catalog", None) if flag_set is not None else None
        self._configs: Dict[str, Optional[Mapping[str, Any]]] = {}
        #: (flag key, variant key, segment name) -> (reason, flag metadata), filled by ``outcome``.
        self.outcomes: Dict[Tuple[str, Any, Any], Tuple[str, Mapping[str, Any]]] = {}

    def __contains__(self, flag_key: str) -> bool:
        return self.catalog is not None and self.catalog.digest(flag_key) is not None

    def config(self, flag_key: str) -> Optional[Mapping[str, Any]]:
        """The flag's config, decoded once; None for a flag this version does not have."""
        if flag_key in self._configs:
            return self._configs[flag_key]
        config = None
        if flag_key in self:
            try:
                config = self.catalog.config(flag_key)
            except (KeyError, ValueError):
                config = None
        self._configs[flag_key] = config
        return config

    def digests(self) -> Dict[str, bytes]:
        """Every flag's content digest by key (for the keys a new version changed)."""
        catalog = self.catalog
        if catalog is None:
            return {}
        return {key: catalog.digest(key) for key in catalog.keys()}

    def outcome(self, flag_key: str, variant: Variant) -> Tuple[str, Mapping[str, Any]]:
        """(reason, flag metadata) for ``variant`` of ``flag_key``; the metadata keeps scalar entries only."""
        metadata = variant.metadata or _EMPTY
        cache_key = (flag_key, variant.key, metadata.get("segmentName"))
        known = self.outcomes.get(cache_key)
        if known is not None:
            return known
        reason = reason_for(self.config(flag_key), variant.key, metadata)
        outcome = (reason, MappingProxyType({k: v for k, v in metadata.items() if isinstance(v, _SCALARS)}))
        self.outcomes[cache_key] = outcome
        return outcome


def reason_for(config: Optional[Mapping[str, Any]], variant_key: Any, metadata: Mapping[str, Any]) -> str:
    """DISABLED for an undeployed flag, DEFAULT for the default variant, else SPLIT or TARGETING_MATCH."""
    if metadata.get("deployed") is False:
        return Reason.DISABLED
    if metadata.get("default"):
        return Reason.DEFAULT
    if config is None:
        return Reason.TARGETING_MATCH
    segment_name = metadata.get("segmentName")
    segments = config.get("segments")
    for segment in segments if isinstance(segments, list) else ():
        if not isinstance(segment, Mapping):
            continue
        segment_metadata = segment.get("metadata")
        name = segment_metadata.get("segmentName") if isinstance(segment_metadata, Mapping) else None
        if segment_name is not None and name != segment_name:
            continue
        variants, split = segment_outcomes(segment)
        if variant_key in variants:
            return Reason.SPLIT if split else Reason.TARGETING_MATCH
    return Reason.TARGETING_MATCH


def segment_outcomes(segment: Mapping[str, Any]) -> Tuple[List[Any], bool]:
    """The variants a matching segment can give, and whether bucketing decides between outcomes."""
    fallback = segment.get("variant")
    bucket = segment.get("bucket")
    allocations = bucket.get("allocations") if isinstance(bucket, Mapping) else None
    if not isinstance(allocations, list) or not allocations:
        return [fallback], False
    variants: List[Any] = []
    covered = False
    for allocation in allocations:
        if not isinstance(allocation, Mapping):
            continue
        distributions = allocation.get("distributions")
        for distribution in distributions if isinstance(distributions, list) else ():
            if isinstance(distribution, Mapping) and distribution.get("variant") not in variants:
                variants.append(distribution.get("variant"))
        if _spans(allocation.get("range"), 100) and isinstance(distributions, list) and len(distributions) == 1 \
                and _spans(distributions[0].get("range") if isinstance(distributions[0], Mapping) else None,
                           FULL_DISTRIBUTION):
            covered = True
    if not covered and fallback not in variants:
        variants.append(fallback)  # users outside every allocation get the segment's own variant
    return variants, len(variants) > 1


def _spans(bounds: Any, top: int) -> bool:
    try:
        return isinstance(bounds, list) and len(bounds) == 2 and bounds[0] <= 0 and bounds[1] >= top
    except TypeError:  # not numbers: the engine skips such a range too
        return False
