"""The public API is the reference's (docs/compatibility.md, 'Public API'): names, import paths, defaults, shapes."""

import importlib
import json
import warnings

import pytest
from stand_in import Answer

import amplitude_experiment
from amplitude_experiment import (AmplitudeCookie, AssignmentConfig, CohortSyncConfig, Experiment,
                                  LocalEvaluationClient, LocalEvaluationConfig, RemoteEvaluationClient,
                                  RemoteEvaluationConfig, ServerZone, User, Variant, __version__)

TOP_LEVEL = ["RemoteEvaluationClient", "RemoteEvaluationConfig", "Variant", "User", "__version__", "Experiment",
             "AmplitudeCookie", "LocalEvaluationClient", "LocalEvaluationConfig", "ServerZone", "AssignmentConfig",
             "CohortSyncConfig"]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_names(name):
    assert hasattr(amplitude_experiment, name)


def test_no_dunder_all_at_top_level():
    assert not hasattr(amplitude_experiment, "__all__")


def test_version():
    assert __version__ == "1.13.0"


@pytest.mark.parametrize("module,name", [
    ("amplitude_experiment.remote.fetch_options", "FetchOptions"),
    ("amplitude_experiment.local.evaluate_options", "EvaluateOptions"),
    ("amplitude_experiment.exposure", "ExposureConfig"),
    ("amplitude_experiment.exposure.exposure_config", "ExposureConfig"),
    ("amplitude_experiment.exception", "FetchException"),
    ("amplitude_experiment.exception", "CohortTooLargeException"),
    ("amplitude_experiment.exception", "HTTPErrorResponseException"),
    ("amplitude_experiment.exception", "CohortsDownloadException"),
    ("amplitude_experiment.local.config", "ServerZone"),
])
def test_submodule_paths(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_submodule_server_zone_is_the_same_enum():
    from amplitude_experiment.local.config import ServerZone as LocalServerZone

    assert LocalServerZone is ServerZone
    assert ServerZone.US.value == "US" and ServerZone.EU.value == "EU"


def test_option_objects():
    from amplitude_experiment.local.evaluate_options import EvaluateOptions
    from amplitude_experiment.remote.fetch_options import FetchOptions

    options = FetchOptions(tracksAssignment=True, tracksExposure=False, flagKeys=["a"])
    assert (options.tracksAssignment, options.tracksExposure, options.flagKeys) == (True, False, ["a"])
    assert FetchOptions().flagKeys is None
    assert EvaluateOptions().tracks_exposure is None
    assert EvaluateOptions(tracks_exposure=True).tracks_exposure is True


def test_fetch_exception_carries_status():
    from amplitude_experiment.exception import FetchException

    error = FetchException(503, "unavailable")
    assert error.status_code == 503
    assert isinstance(error, Exception)


# --- Variant (docs/compatibility.md, 'Public API') ------------------------------------------------


def test_variant_positional_order_is_value_first():
    variant = Variant("on", "payload")
    assert (variant.value, variant.payload, variant.key, variant.metadata) == ("on", "payload", None, None)


def test_variant_equality_ignores_metadata():
    assert Variant("on", {"a": 1}, "k", {"m": 1}) == Variant("on", {"a": 1}, "k", {"m": 2})
    assert Variant("on", key="k") != Variant("off", key="k")
    assert Variant("on", key="k") != Variant("on", key="j")
    assert Variant("on", 1) != Variant("on", 2)
    assert not (Variant("on") == None)  # noqa: E711 - the reference's None check


def test_variant_against_foreign_objects_raises_attribute_error():
    with pytest.raises(AttributeError):
        Variant("on") == "on"  # noqa: B015


def test_variant_is_unhashable():
    with pytest.raises(TypeError):
        hash(Variant("on"))


def test_variant_str_mentions_its_fields():
    text = str(Variant("v", "p", "k", {"m": 1}))
    assert "k" in text and "v" in text and "p" in text


# --- User (docs/compatibility.md, 'Public API') ---------------------------------------------------

USER_FIELDS = ["device_id", "user_id", "country", "city", "region", "dma", "language", "platform", "version", "os",
               "device_manufacturer", "device_brand", "device_model", "carrier", "library", "ip_address",
               "user_properties", "groups", "group_properties", "group_cohort_ids", "cohort_ids"]


def test_user_to_json_keeps_nulls_in_attribute_order():
    user = User(user_id="ü", device_id="d")
    user.extra = 1
    text = user.to_json()
    assert list(json.loads(text)) == USER_FIELDS + ["extra"]
    assert text.startswith('{"device_id": "d", "user_id": "\\u00fc", "country": null')
    assert str(user) == text


def test_user_keyword_order():
    user = User("d", "u")
    assert (user.device_id, user.user_id) == ("d", "u")


def test_user_add_group_cohort_ids():
    user = User()
    user.add_group_cohort_ids("org", "acme", ["c1"])
    user.add_group_cohort_ids("org", "globex", ["c2"])
    assert user.group_cohort_ids == {"org": {"acme": ["c1"], "globex": ["c2"]}}


def test_user_has_identity_equality():
    assert User(user_id="u") != User(user_id="u")


# --- Experiment factory (docs/compatibility.md, 'Public API') -------------------------------------


def test_factory_returns_the_same_instance_and_ignores_later_configs():
    first = Experiment.initialize_local("key-a", LocalEvaluationConfig(flag_source="poll"))
    again = Experiment.initialize_local("key-a", LocalEvaluationConfig(debug=True, flag_source="poll"))
    assert again is first
    assert Experiment.initialize_local("key-b", LocalEvaluationConfig(flag_source="poll")) is not first
    remote = Experiment.initialize_remote("key-a")
    assert Experiment.initialize_remote("key-a") is remote
    assert remote is not first
    assert isinstance(first, LocalEvaluationClient) and isinstance(remote, RemoteEvaluationClient)


@pytest.mark.parametrize("factory", [Experiment.initialize_local, Experiment.initialize_remote])
def test_empty_key_raises(factory):
    with pytest.raises(ValueError):
        factory("")


def test_clients_reject_empty_keys():
    for cls in (LocalEvaluationClient, RemoteEvaluationClient):
        with pytest.raises(ValueError, match="Experiment API key is empty"):
            cls("")


# --- configs (docs/compatibility.md, 'Public API') ------------------------------------------------


def test_remote_config_defaults():
    config = RemoteEvaluationConfig()
    assert config.debug is False
    assert config.server_url == "https://api.lab.amplitude.com"
    assert config.fetch_timeout_millis == 10000
    assert config.fetch_retries == 0
    assert config.fetch_retry_backoff_min_millis == 500
    assert config.fetch_retry_backoff_max_millis == 10000
    assert config.fetch_retry_backoff_scalar == 1.5
    assert config.fetch_retry_timeout_millis == 10000
    assert config.fetch_pool_acquire_timeout_millis is None
    assert config.server_zone is ServerZone.US
    # Documented deviation (docs/compatibility.md): 10, not the reference's 1; explicit values honoured.
    assert config.connection_pool_max_size == 10
    assert RemoteEvaluationConfig(connection_pool_max_size=1).connection_pool_max_size == 1


def test_local_config_defaults():
    config = LocalEvaluationConfig()
    assert config.debug is False
    assert config.server_url == "https://api.lab.amplitude.com"
    assert config.server_zone is ServerZone.US
    assert config.flag_config_polling_interval_millis == 30000
    assert config.flag_config_poller_request_timeout_millis == 10000
    assert config.stream_updates is False
    assert config.stream_server_url == "https://stream.lab.amplitude.com"
    assert config.stream_flag_conn_timeout == 1500
    assert config.assignment_config is None
    assert config.exposure_config is None
    assert config.cohort_sync_config is None


def test_eu_switching():
    assert RemoteEvaluationConfig(server_zone=ServerZone.EU).server_url == "https://api.lab.eu.amplitude.com"
    assert RemoteEvaluationConfig(server_zone=ServerZone.EU, server_url="http://x:1").server_url == "http://x:1"
    cohorts = CohortSyncConfig("api", "secret")
    local = LocalEvaluationConfig(server_zone=ServerZone.EU, cohort_sync_config=cohorts)
    assert local.server_url == "https://flag.lab.eu.amplitude.com"
    assert cohorts.cohort_server_url == "https://cohort-v2.lab.eu.amplitude.com"  # the passed object is mutated
    assert local.stream_server_url == "https://stream.lab.eu.amplitude.com"      # Q6 fixed (docs/compatibility)
    custom = LocalEvaluationConfig(server_zone=ServerZone.EU, server_url="http://x:1")
    assert custom.server_url == "http://x:1"


def test_eu_as_a_string_does_not_switch():
    assert RemoteEvaluationConfig(server_zone="EU").server_url == "https://api.lab.amplitude.com"
    assert LocalEvaluationConfig(server_zone="EU").server_url == "https://api.lab.amplitude.com"


def test_cohort_sync_config_defaults_and_clamp():
    config = CohortSyncConfig("api", "secret")
    assert config.max_cohort_size == 2147483647
    assert config.cohort_polling_interval_millis == 60000
    assert config.cohort_server_url == "https://cohort-v2.lab.amplitude.com"
    assert CohortSyncConfig("a", "s", cohort_polling_interval_millis=1000).cohort_polling_interval_millis == 60000


def test_assignment_config_first_positional_is_cache_capacity():
    config = AssignmentConfig(123)
    assert config.cache_capacity == 123
    assert AssignmentConfig().cache_capacity == 65536
    assert AssignmentConfig().send_evaluated_props is False


def test_cookie_is_exposed():
    assert AmplitudeCookie.cookie_name("1234567") == "amp_123456"


# --- LocalEvaluationClient behaviour (docs/compatibility.md, 'Public API', 'Deprecated filters') ---

FLAGS = [
    {"key": "on-flag", "metadata": {"deployed": True}, "variants": {"on": {"key": "on", "value": "on"}},
     "segments": [{"variant": "on"}]},
    {"key": "default-flag", "variants": {"off": {"key": "off", "metadata": {"default": True}}},
     "segments": [{"variant": "off"}]},
    {"key": "undeployed-flag", "metadata": {"deployed": False}, "variants": {"on": {"key": "on"}},
     "segments": [{"variant": "on"}]},
]


@pytest.fixture
def client(stand_in):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
    client = LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll"))
    yield client
    client.stop()


def test_evaluate_v2_before_start_is_empty(client):
    assert client.evaluate_v2(User(user_id="u")) == {}


def test_evaluate_v2_returns_everything(client):
    client.start()
    result = client.evaluate_v2(User(user_id="u"))
    assert list(result) == ["on-flag", "default-flag", "undeployed-flag"]
    assert result["on-flag"] == Variant("on", key="on")
    assert result["on-flag"].metadata == {"deployed": True}


def test_empty_flag_keys_mean_nothing(client):
    client.start()
    assert client.evaluate_v2(User(user_id="u"), set()) == {}
    assert client.evaluate_v2(User(user_id="u"), []) == {}
    assert list(client.evaluate_v2(User(user_id="u"), None)) == ["on-flag", "default-flag", "undeployed-flag"]


def test_deprecated_evaluate_filters_and_warns(client):
    client.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")  # the SDK must force its own warning through
        result = client.evaluate(User(user_id="u"))
    assert list(result) == ["on-flag"]
    assert any(issubclass(w.category, DeprecationWarning) and "evaluate_v2" in str(w.message) for w in caught)
    with pytest.warns(DeprecationWarning):
        assert client.evaluate(User(user_id="u"), []) == {}
    with pytest.warns(DeprecationWarning):
        assert list(client.evaluate(User(user_id="u"), ["on-flag", "default-flag"])) == ["on-flag"]


def test_context_manager_does_not_start(stand_in):
    stand_in.answer("GET", "/sdk/v2/flags", Answer(200, FLAGS))
    with LocalEvaluationClient("key", LocalEvaluationConfig(server_url=stand_in.url, flag_source="poll")) as client:
        assert client.evaluate_v2(User(user_id="u")) == {}
    assert [r for r in stand_in.requests if r.path == "/sdk/v2/flags"] == []
