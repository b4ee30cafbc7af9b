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
