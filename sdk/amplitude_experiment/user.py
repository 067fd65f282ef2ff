import json
from typing import Any, Dict, List, Optional


class User:
    """The person (and their groups) that flags are evaluated for.

    ``device_id`` and ``user_id`` identify the user; every other field, and each entry of
    ``user_properties``, can be targeted by flag rules. Attributes are plain and mutable, and
    extra attributes set by the caller are evaluated and sent like the predefined ones.
    """

    def __init__(
        self,
        device_id: Optional[str] = None,
        user_id: Optional[str] = None,
        country: Optional[str] = None,
        city: Optional[str] = None,
        region: Optional[str] = None,
        dma: Optional[str] = None,
        language: Optional[str] = None,
        platform: Optional[str] = None,
        version: Optional[str] = None,
        os: Optional[str] = None,
        device_manufacturer: Optional[str] = None,
        device_brand: Optional[str] = None,
        device_model: Optional[str] = None,
        carrier: Optional[str] = None,
        library: Optional[str] = None,
        ip_address: Optional[str] = None,
        user_properties: Optional[Dict[str, Any]] = None,
        groups: Optional[Dict[str, List[str]]] = None,
        group_properties: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None,
        group_cohort_ids: Optional[Dict[str, Dict[str, List[str]]]] = None,
        cohort_ids: Optional[List[str]] = None,
    ):
        self.device_id = device_id
        self.user_id = user_id
        self.country = country
        self.city = city
        self.region = region
        self.dma = dma
        self.language = language
        self.platform = platform
        self.version = version
        self.os = os
        self.device_manufacturer = device_manufacturer
        self.device_brand = device_brand
        self.device_model = device_model
        self.carrier = carrier
        self.library = library
        self.ip_address = ip_address
        self.user_properties = user_properties
        self.groups = groups
        self.group_properties = group_properties
        self.group_cohort_ids = group_cohort_ids
        self.cohort_ids = cohort_ids

    def to_json(self) -> str:
        """Every attribute as JSON, ``None`` included as ``null``, in attribute order.

        :raises TypeError: when an attribute holds a value JSON cannot encode.
        """
        return json.dumps(self, default=_attributes_of)

    def __str__(self) -> str:
        return self.to_json()

    def add_group_cohort_ids(self, group_type: str, group_name: str, cohort_ids: List[str]) -> None:
        """Record the cohorts a group belongs to, creating ``group_cohort_ids`` if needed."""
        if self.group_cohort_ids is None:
            self.group_cohort_ids = {}
        self.group_cohort_ids.setdefault(group_type, {})[group_name] = cohort_ids


def _attributes_of(value: Any) -> Dict[str, Any]:
    try:
        return value.__dict__
    except AttributeError:
        raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__) from None
