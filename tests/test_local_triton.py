from pathlib import Path

from local_triton.server import Installation, Ports, server_command


def test_server_command_serves_every_model_in_explicit_mode():
    inst = Installation(Path("/t/bin/tritonserver"), Path("/t/libs"), Path("/t/py"), Path("/t/stub"))
    cmd = server_command(inst, Path("/repo"), Path("/backends"), Ports(1, 2, 3))
    assert cmd[0] == "/t/bin/tritonserver"
    for flag in ["--model-repository=/repo", "--backend-directory=/backends", "--model-control-mode=explicit",
                 "--http-port=1", "--grpc-port=2", "--metrics-port=3", "--http-address=127.0.0.1",
                 "--load-model=*"]:
        assert flag in cmd
    only = server_command(inst, Path("/repo"), Path("/backends"), Ports(), models=["digits"])
    assert [a for a in only if a.startswith("--load-model")] == ["--load-model=digits"]


def _backend_module():
    """The stand-in backend's model.py, imported outside Triton: the one
    module Triton provides it is replaced by an empty one (no call reaches it)."""
    import importlib.util
    import sys
    import types

    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    path = Path(__file__).resolve().parent.parent / "local_triton" / "backends" / "onnxruntime" / "model.py"
    spec = importlib.util.spec_from_file_location("standin_onnxruntime_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backend_threads_do_not_spin_unless_asked():
    backend = _backend_module()
    options = backend.session_options({}, {})
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 0 and options.inter_op_num_threads == 0
    spinning = backend.session_options({}, {"ORT_ALLOW_SPINNING": "1"})
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_backend_threads_follow_the_native_backends_parameters():
    backend = _backend_module()
    config = {"parameters": {"intra_op_thread_count": {"string_value": "3"},
                             "inter_op_thread_count": {"string_value": "2"}}}
    options = backend.session_options(config, {})
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
    assert backend.session_options(config, {"ORT_INTRA_OP_THREADS": "1"}).intra_op_num_threads == 1
