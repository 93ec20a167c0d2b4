"""Security: nothing listens on the network, no checkpoint code runs unless asked, only
safetensors are read (pickle refusal and engine-file checks live in test_modeling.py and
test_engines.py)."""

import socket

import pytest

from v2x_vlm_ros.model import modeling
from v2x_vlm_ros.tools.soak import SoakOptions, soak


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to bind, listen or connect a socket is recorded and refused."""
    attempts = []

    def refuse(name):
        def call(self, *args, **kwargs):
            attempts.append((name, args))
            raise OSError(f"test: {name} refused")
        return call

    for name in ("bind", "listen", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse(name))
    return attempts


def test_the_onboard_services_open_no_socket(tiny_model_dir, tmp_path, no_network):
    """Planning with the roadside link, the describer cache and the reports: the whole
    vehicle path of a soak run, with sockets refused."""
    result = soak(SoakOptions(frames=30, model=str(tiny_model_dir), out=str(tmp_path / "soak"),
                              sample_every=5), progress=False)
    assert result["plans_out"] == 30 and result["unexplained"] == 0
    assert no_network == []


def test_model_loading_never_trusts_remote_code_unless_asked(tiny_model_dir, monkeypatch):
    seen = []
    real_model = modeling.Florence2ForConditionalGeneration.from_pretrained.__func__
    real_tok = modeling.AutoTokenizer.from_pretrained.__func__

    def spy_model(cls, *args, **kwargs):
        seen.append(("model", kwargs.get("trust_remote_code"), kwargs.get("use_safetensors")))
        return real_model(cls, *args, **kwargs)

    def spy_tok(cls, *args, **kwargs):
        seen.append(("tokenizer", kwargs.get("trust_remote_code"), None))
        return real_tok(cls, *args, **kwargs)

    monkeypatch.setattr(modeling.Florence2ForConditionalGeneration, "from_pretrained", classmethod(spy_model))
    monkeypatch.setattr(modeling.AutoTokenizer, "from_pretrained", classmethod(spy_tok))
    modeling.load_model(tiny_model_dir)
    assert seen == [("model", False, True), ("tokenizer", False, None)]
    seen.clear()
    modeling.load_model(tiny_model_dir, trust_remote_code=True)  # explicit: allowed, and logged
    assert [s[1] for s in seen] == [True, True]
