"""`promote`, `rollback` and `status`: arguments, the lines printed from a rollout state,
exit codes and error lines. No router here: small fake services answer fixed JSON over real
HTTP where the order of the calls matters; the end-to-end test lives in tests/integration."""

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from export.cli import main, parse_args
from export.config import VersionPolicy, read_config, render
from export.errors import ExportError
from export.rollout_args import PromoteArgs, RollbackArgs, StatusArgs
from export.promote import (follow, outcome, promote, serving_version,
                            shadow_refusal, start_body)
from export.remote import Unreachable, error_line, router_api, router_hints, router_url, triton_hints, triton_url
from export.rollout_view import live_line, shadow_figures, shadow_line, state_line, status_table
from tests.conftest import MODEL_REPOSITORY, ROOT, free_port

STATE = {
    "model": "sentiment", "revision": 7, "default_version": 2, "canary_version": 3, "canary_percent": 25.0,
    "shadow_version": None, "shadow_percent": 0.0, "status": "progressing", "step": 1, "steps": [5, 25, 50, 100],
    "reason": None,
    "analysis": {
        "policy": {"interval_s": 30, "min_requests": 100, "max_error_rate": 0.01, "max_p99_ratio": 1.5,
                   "min_agreement": None, "p99_floor_ms": 5.0},
        "verdict": {"at": 1700000000.0, "step": 1, "percent": 25.0, "result": "pass", "reason": "within policy",
                    "canary": {"version": 3, "requests": 812, "errors": 0, "error_rate": 0.0, "p99_ms": 4.1},
                    "default": {"version": 2, "requests": 2403, "errors": 1, "error_rate": 0.0004, "p99_ms": 3.9},
                    "shadow": {"version": 3, "requests": 500, "agreement": 0.992, "errors": 0}}},
    "history": [],
}


def _state(**changes) -> dict:
    return {**STATE, **changes}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeService:
    """Real HTTP on a free port: a fixed (status, JSON) per (method, path), 404 otherwise;
    each request is appended to `seen` as (name, method, path, body)."""

    def __init__(self, name: str, answers: dict, seen: list) -> None:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            length = int(handler.headers.get("Content-Length") or 0)
            body = json.loads(handler.rfile.read(length)) if length else None
            seen.append((name, handler.command, handler.path, body))
            status, payload = answers.get((handler.command, handler.path), (404, {"detail": "Not Found"}))
            data = json.dumps(payload).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        handler = type("Handler", (BaseHTTPRequestHandler,), {"do_GET": answer, "do_PUT": answer, "do_POST": answer,
                                                              "log_message": lambda *a: None})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def serve():
    """serve(name, answers, seen) -> a FakeService, stopped after the test."""
    services: list[FakeService] = []

    def start(name: str, answers: dict, seen: list) -> FakeService:
        services.append(FakeService(name, answers, seen))
        return services[-1]

    yield start
    for service in services:
        service.server.shutdown()
        service.server.server_close()


def models_answer(model: str, versions: dict) -> dict:
    """GET /models as router/dataplane/views.py: models_view answers it (the fields read here)."""
    return {"default_model": model, "triton": True, "models": {model: {"versions": versions, "default_version": None}}}


# -- arguments ---------------------------------------------------------------------------------------------------


def test_promote_arguments_parse_into_promote_args(tmp_path):
    command, args, _ = parse_args(["--repository", str(tmp_path), "promote", "sentiment", "v3", "--steps", "2.5,50,100",
                                   "--interval", "5", "--min-requests", "20", "--max-error-rate", "0.02",
                                   "--max-p99-ratio", "2", "--min-agreement", "0.98", "--shadow", "60",
                                   "--router", "router:9000", "--triton", "triton:8000", "--no-wait"])
    assert (command, args) == ("promote", PromoteArgs(
        tmp_path, "sentiment", 3, steps=(2.5, 50.0, 100.0), interval=5.0, min_requests=20, max_error_rate=0.02,
        max_p99_ratio=2.0, min_agreement=0.98, shadow=60.0, router="router:9000", triton="triton:8000", no_wait=True))
    assert start_body(args) == {"canary_version": 3, "steps": [2.5, 50, 100], "interval_s": 5.0, "min_requests": 20,
                                "max_error_rate": 0.02, "max_p99_ratio": 2.0, "min_agreement": 0.98}


def test_options_left_out_are_left_to_the_router(tmp_path):
    command, args, _ = parse_args(["--repository", str(tmp_path), "promote", "digits", "2"])
    assert args == PromoteArgs(tmp_path, "digits", 2)
    assert start_body(args) == {"canary_version": 2}  # the router's defaults apply


def test_rollback_and_status_arguments():
    assert parse_args(["rollback", "digits"]) == ("rollback", RollbackArgs("digits"), False)
    assert parse_args(["rollback", "digits", "--reason", "p99", "--router", "r:1"]) == (
        "rollback", RollbackArgs("digits", "r:1", "p99"), False)
    assert parse_args(["status"]) == ("status", StatusArgs(), False)
    assert parse_args(["status", "digits", "--json"]) == ("status", StatusArgs("digits", None, True), False)


@pytest.mark.parametrize("argv,message", [
    (["promote", "sentiment", "three"], "argument version: a version looks like 3 or v3, got 'three'"),
    (["promote", "sentiment", "0"], "argument version: a version looks like 3 or v3, got '0'"),
    (["promote", "sentiment", "3", "--steps", "5,x"],
     "argument --steps: steps are percents above 0 and at most 100, like 5,25,50,100; got '5,x'"),
    (["promote", "sentiment", "3", "--steps", "0,100"],
     "argument --steps: steps are percents above 0 and at most 100, like 5,25,50,100; got '0,100'"),
    (["promote", "sentiment", "3", "--max-error-rate", "5"],
     "argument --max-error-rate: a fraction between 0 and 1 (0.01 is 1%), got '5'"),
    (["promote", "sentiment", "3", "--min-agreement", "nan"],
     "argument --min-agreement: a fraction between 0 and 1 (0.01 is 1%), got 'nan'"),
    (["promote", "sentiment", "3", "--shadow", "0"], "argument --shadow: a number of seconds above 0, got '0'"),
    (["promote", "sentiment", "3", "--shadow", "inf"], "argument --shadow: a number of seconds above 0, got 'inf'"),
    (["promote", "sentiment", "3", "--steps", "50,25,100"],
     "argument --steps: steps must rise, like 5,25,50,100; got '50,25,100'"),
    (["promote", "sentiment", "3", "--steps", "5,5"], "argument --steps: steps must rise, like 5,25,50,100; got '5,5'"),
    (["promote", "sentiment", "3", "--steps", "5,nan"],
     "argument --steps: steps are percents above 0 and at most 100, like 5,25,50,100; got '5,nan'"),
    (["promote", "sentiment", "3", "--steps", ",".join(str(s) for s in range(1, 22))],
     "argument --steps: at most 20 steps, got 21"),
    (["promote", "sentiment", "3", "--min-requests", "0"],
     "argument --min-requests: a whole number of requests from 1 to 10000000, got '0'"),
    (["promote", "sentiment", "3", "--min-requests", "2.5"],
     "argument --min-requests: a whole number of requests from 1 to 10000000, got '2.5'"),
    (["promote", "sentiment", "3", "--max-p99-ratio", "0.9"],
     "argument --max-p99-ratio: a ratio from 1 to 1000 (1.5: the canary's p99 may be 1.5 x the default's), got '0.9'"),
    (["promote", "sentiment", "3", "--max-p99-ratio", "inf"],
     "argument --max-p99-ratio: a ratio from 1 to 1000 (1.5: the canary's p99 may be 1.5 x the default's), got 'inf'"),
    (["promote", "sentiment", "3", "--max-p99-ratio", "nan"],
     "argument --max-p99-ratio: a ratio from 1 to 1000 (1.5: the canary's p99 may be 1.5 x the default's), got 'nan'"),
    (["promote", "sentiment", "3", "--max-error-rate", "-0.01"],
     "argument --max-error-rate: a fraction between 0 and 1 (0.01 is 1%), got '-0.01'"),
    (["promote", "sentiment", "3", "--min-agreement", "inf"],
     "argument --min-agreement: a fraction between 0 and 1 (0.01 is 1%), got 'inf'"),
    (["promote", "sentiment", "3", "--interval", "0"],
     "argument --interval: a number of seconds from 0.1 to 86400, got '0'"),
    (["promote", "sentiment", "3", "--interval", "nan"],
     "argument --interval: a number of seconds from 0.1 to 86400, got 'nan'"),
    (["promote", "sentiment", "3", "--interval", "inf"],
     "argument --interval: a number of seconds from 0.1 to 86400, got 'inf'"),
    (["promote", "sentiment"], "the following arguments are required: version"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    assert run(capsys, *argv) == (2, "", f"error: {message} (see --help)\n")


def test_the_router_s_limits_are_accepted():
    _, args, _ = parse_args(["promote", "digits", "2", "--steps", ",".join(str(s) for s in range(5, 105, 5)),
                             "--interval", "0.1", "--min-requests", "1", "--max-p99-ratio", "1",
                             "--max-error-rate", "0", "--min-agreement", "1"])
    assert (len(args.steps), args.interval, args.min_requests, args.max_p99_ratio, args.max_error_rate,
            args.min_agreement) == (20, 0.1, 1, 1.0, 0.0, 1.0)
    _, args, _ = parse_args(["promote", "digits", "2", "--interval", "86400", "--min-requests", "10000000",
                             "--max-p99-ratio", "1000"])
    assert (args.interval, args.min_requests, args.max_p99_ratio) == (86400.0, 10_000_000, 1000.0)


def test_bad_options_are_refused_before_triton_or_the_router_is_asked(capsys, repo_copy, serve):
    seen: list = []
    router, triton = serve("router", {}, seen), serve("triton", {}, seen)
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "2", "--router", router.url,
                         "--triton", triton.url, "--max-p99-ratio", "inf")
    assert (code, out, seen) == (2, "", [])


def test_rollout_commands_start_without_torch_or_httpx():
    probe = ("import sys, export.cli\n"
             "try:\n    export.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'onnx', 'tritonclient.grpc', 'httpx') if m in sys.modules))")
    for argv in (["promote", "--help"], ["status", "--help"], ["rollback", "--help"]):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "[]"), proc.stderr


# -- where to call, and the errors ------------------------------------------------------------------------------


def test_urls_come_from_the_flag_else_the_environment_else_the_default():
    assert router_url(None, {}) == "http://localhost:8080"
    assert router_url(None, {"ROUTER_URL": "router:9000/"}) == "http://router:9000"
    assert router_url("https://r.example/", {"ROUTER_URL": "router:9000"}) == "https://r.example"
    assert triton_url(None, {}) == "http://localhost:8000"
    assert triton_url(None, {"TRITON_HTTP_URL": "127.0.0.1:18000"}) == "http://127.0.0.1:18000"
    assert triton_url("triton:8000", {"TRITON_HTTP_URL": "x:1"}) == "http://triton:8000"


def test_router_errors_are_one_line_with_their_code():
    body = {"error": {"code": "conflict", "request_id": "r1",
                      "message": "canary_version: sentiment v9 is not READY in Triton\n(ready: v1, v2)"}}
    assert error_line("router", 409, body, "Conflict", router_hints(True)) == (
        "router: 409 conflict: canary_version: sentiment v9 is not READY in Triton (ready: v1, v2)")
    assert error_line("router", 502, None, "Bad Gateway", router_hints(True)) == "router: 502 bad gateway"
    assert error_line("router", 404, {"detail": "Not Found"}, "Not Found") == "router: 404 not found: Not Found"


def test_401_and_403_say_what_is_wrong_with_the_key():
    unauthorized = {"error": {"code": "unauthorized", "message": "an API key is required", "request_id": "r"}}
    forbidden = {"error": {"code": "forbidden", "message": "this key lacks the admin scope", "request_id": "r"}}
    assert error_line("router", 401, unauthorized, "", router_hints(False)) == (
        "router: 401 unauthorized: an API key is required (set ROUTER_API_KEY to a key with the admin scope)")
    assert error_line("router", 401, unauthorized, "", router_hints(True)) == (
        "router: 401 unauthorized: an API key is required (the key in ROUTER_API_KEY was refused)")
    assert error_line("router", 403, forbidden, "", router_hints(True)) == (
        "router: 403 forbidden: this key lacks the admin scope (the key in ROUTER_API_KEY lacks the admin scope)")


def test_triton_errors_and_its_admin_header():
    body = {"error": "failed to load 'digits', failed to poll from model repository"}
    assert error_line("triton", 400, body, "Bad Request", triton_hints("triton-admin-key", False)) == (
        "triton: 400 bad request: failed to load 'digits', failed to poll from model repository")
    assert error_line("triton", 403, {"error": "This API is restricted"}, "Forbidden",
                      triton_hints("triton-admin-key", True)) == (
        "triton: 403 forbidden: This API is restricted "
        "(Triton refused the key in TRITON_ADMIN_KEY (sent as header triton-admin-key))")


def test_an_unreachable_router_is_one_line_without_the_key():
    port = free_port()
    with router_api(f"127.0.0.1:{port}", {"ROUTER_API_KEY": "rk_secret"}) as router:
        with pytest.raises(Unreachable) as caught:
            router.call("GET", "/admin/rollouts")
    assert str(caught.value).startswith(f"router: cannot reach http://127.0.0.1:{port} (")
    assert "rk_secret" not in str(caught.value)


def test_a_500_or_503_from_the_router_is_worth_asking_again_but_a_409_is_not(serve):
    unavailable = {"error": {"code": "control_unavailable", "message": "the rollout store (Redis) is unreachable",
                             "request_id": "r1"}}
    conflict = {"error": {"code": "conflict", "message": "a rollout of digits is already progressing",
                          "request_id": "r2"}}
    fake = serve("router", {("GET", "/503"): (503, unavailable), ("GET", "/500"): (500, None),
                            ("GET", "/409"): (409, conflict)}, [])
    with router_api(fake.url, {}) as router:
        with pytest.raises(Unreachable) as caught:
            router.call("GET", "/503")
        assert (str(caught.value), caught.value.status) == (
            "router: 503 control_unavailable: the rollout store (Redis) is unreachable", 503)
        with pytest.raises(Unreachable) as caught:
            router.call("GET", "/500")
        assert (str(caught.value), caught.value.status) == ("router: 500 internal server error", 500)
        with pytest.raises(ExportError) as caught:
            router.call("GET", "/409")
        assert type(caught.value) is ExportError
        assert str(caught.value) == "router: 409 conflict: a rollout of digits is already progressing"


# -- lines from a state -----------------------------------------------------------------------------------------


def test_the_live_line_of_a_full_state():
    assert live_line(STATE) == ("step 2/4  25%  canary v3: 812 req, 0.00% err, p99 4.1 ms | "
                                "default v2: 2403 req, 0.04% err, p99 3.9 ms | agreement 99.2% | pass")


def test_missing_figures_are_dashes():
    assert live_line(_state(analysis=None, step=None, canary_percent=5.0)) == (
        "step -/4  5%  canary v3: - req, - err, p99 - | default v2: - req, - err, p99 - | -")
    verdict = {"result": "hold", "reason": "canary has 40 of 100 requests",
               "canary": {"version": None, "requests": 40, "error_rate": None}, "default": None, "shadow": None}
    policy = {"min_agreement": 0.99}
    assert live_line(_state(status="paused", steps=None, analysis={"verdict": verdict, "policy": policy})) == (
        "paused  step 2/-  25%  canary v3: 40 req, - err, p99 - | default v2: - req, - err, p99 - | agreement - | "
        "hold: canary has 40 of 100 requests")


def test_a_step_without_its_verdict_shows_the_figures_counted_so_far():
    live = {"window": 8, "canary": {"version": 3, "requests": 14, "errors": 0, "error_rate": 0.0, "p99_ms": 3.2},
            "default": {"version": 2, "requests": 40, "errors": 0, "error_rate": 0.0, "p99_ms": None}, "shadow": None}
    previous_step = {**STATE["analysis"], "live": live}  # the verdict is step 1's (index 1); the state is at 2
    assert live_line(_state(step=2, canary_percent=50.0, analysis=previous_step)) == (
        "step 3/4  50%  canary v3: 14 req, 0.00% err, p99 3.2 ms | default v2: 40 req, 0.00% err, p99 - | -")
    pending = {**STATE["analysis"], "verdict": {**STATE["analysis"]["verdict"], "result": "pending", "reason": None,
                                                "ends_in_s": 12.4, "shadow": None}}
    assert live_line(_state(analysis=pending)).endswith(
        "| default v2: 2403 req, 0.04% err, p99 3.9 ms | pending (12 s left)")


def test_shadow_figures_are_the_live_ones_else_the_verdicts():
    assert shadow_figures(STATE)["agreement"] == 0.992
    live = {"analysis": {"verdict": STATE["analysis"]["verdict"],
                         "live": {"shadow": {"version": 3, "requests": 12, "compared": 12, "agreement": 1.0}}}}
    assert shadow_line(shadow_figures(live), 3) == "shadow v3: 12 req, agreement 100.0%, - err"
    assert shadow_line(shadow_figures({}), 3) == "shadow v3: - req, agreement -, - err"


def test_state_line_and_status_table():
    assert state_line(_state(shadow_version=3, shadow_percent=100.0)) == (
        "sentiment: progressing, default v2, canary v3 at 25%, step 2/4, shadow v3 at 100%, revision 7")
    rolled = _state(status="rolled_back", canary_version=None, canary_percent=0.0, step=None, revision=9,
                    reason="canary error rate 3.10% > 1.00%")
    assert state_line(rolled) == ("sentiment: rolled_back, default v2, canary - at 0%, step -/4, shadow -, "
                                  "revision 9 (canary error rate 3.10% > 1.00%)")
    assert status_table([STATE, {"model": "digits", "revision": 0, "default_version": None, "canary_percent": 0.0,
                                 "status": "idle"}]) == [
        "MODEL      STATUS       DEFAULT  CANARY  PERCENT  STEP  SHADOW  REVISION",
        "sentiment  progressing  v2       v3      25%      2/4   -       7",
        "digits     idle         -        -       0%       -     -       0",
    ]


# -- how a rollout ends -----------------------------------------------------------------------------------------


def test_exit_codes_by_status():
    assert outcome(STATE, 3) is None
    assert outcome(_state(status="promoted", default_version=3, canary_version=None, revision=11), 3) == (
        0, "promoted: sentiment v3 is the default (revision 11)")
    rolled = _state(status="rolled_back", canary_version=None, step=None, canary_percent=0.0,
                    reason="canary p99 9.1 ms > 1.5 x default 3.9 ms")
    assert outcome(rolled, 3) == (3, "rolled back: sentiment v3 at step 2/4 (25%): canary p99 9.1 ms > 1.5 x "
                                     "default 3.9 ms; the default stays v2")
    paused = _state(status="paused", reason="paused: fewer than 100 canary requests at 25% after 3 intervals")
    assert outcome(paused, 3) == (
        4, "paused: sentiment v3 at step 2/4 (25%): fewer than 100 canary requests at 25% after 3 intervals; "
           "it stays paused (`python -m export rollback sentiment` ends it)")


def test_a_rollout_changed_by_someone_else_is_an_error():
    with pytest.raises(ExportError, match=r"^the rollout of sentiment v3 stopped: status 'idle' at revision 7; "):
        outcome(_state(status="idle"), 3)
    with pytest.raises(ExportError, match=r"^the rollout of sentiment now has canary v4, not v3: "):
        outcome(_state(canary_version=4), 3)


def test_the_shadow_check_before_the_start():
    assert shadow_refusal({"agreement": 0.9}, None) is None
    assert shadow_refusal({"agreement": 0.996}, 0.995) is None
    assert shadow_refusal({"agreement": 0.97, "requests": 500}, 0.995) == (
        "shadow agreement 97.0% is below --min-agreement 99.5%")
    assert shadow_refusal({"requests": 0, "agreement": None}, 0.99) == (
        "no shadow agreement was measured (0 requests); --min-agreement 99% needs one")


def test_follow_prints_a_line_per_change_and_returns_the_exit_code():
    later = {**STATE["analysis"], "verdict": {**STATE["analysis"]["verdict"], "at": 1700000030.0}}
    states = iter([STATE, STATE, _state(step=2, canary_percent=50.0, analysis=later),
                   _state(status="promoted", step=None, canary_version=None, default_version=3, canary_percent=0.0)])
    lines: list[str] = []
    code = follow(lambda: next(states), 3, lines.append, sleep=lambda s: None, state=STATE)
    assert code == 0
    assert [line[:14] for line in lines[:-1]] == ["step 2/4  25% ", "step 3/4  50% ", "promoted  step"]  # no repeats
    assert lines[-1] == "promoted: sentiment v3 is the default (revision 7)"


def test_follow_shows_the_figures_again_every_10_s_while_a_step_is_pending():
    def pending(requests: int) -> dict:
        verdict = {"step": 1, "result": "pending", "canary": {"requests": requests}}
        return _state(analysis={"verdict": verdict})

    states = iter([pending(1), pending(2), pending(3), pending(4), _state(status="paused", reason="by hand")])
    clock = iter(range(0, 1000, 4)).__next__  # 4 s a poll
    lines: list[str] = []
    assert follow(lambda: next(states), 3, lines.append, sleep=lambda s: None, clock=clock) == 4
    assert [line.split("|")[0] for line in lines[:-1]] == [
        "step 2/4  25%  canary v3: 1 req, - err, p99 - ",  # 0 s
        "step 2/4  25%  canary v3: 4 req, - err, p99 - ",  # 12 s: the figures again (2 and 3 were within 10 s)
        "paused  step 2/4  25%  canary v3: 812 req, 0.00% err, p99 4.1 ms ",
    ]


def test_follow_waits_out_a_router_restart_but_not_forever():
    clock = iter(range(0, 1000, 10)).__next__  # 10 s a tick

    def down():
        raise Unreachable("router: cannot reach http://r:1 (connection refused)")

    answers = iter([down, down, lambda: _state(status="paused", reason="held")])
    lines: list[str] = []
    assert follow(lambda: next(answers)(), 3, lines.append, sleep=lambda s: None, clock=clock) == 4
    assert lines[0] == ("router: cannot reach http://r:1 (connection refused); "
                        "waiting up to 30 s for the router to come back")
    with pytest.raises(Unreachable, match=r"^router: cannot reach http://r:1 \(connection refused\), still after 30 s"):
        follow(down, 3, lines.append, sleep=lambda s: None, clock=clock)


def test_follow_waits_out_a_500_or_503_from_the_router_for_30_s():
    clock = iter(range(0, 1000, 10)).__next__  # 10 s a tick

    def failing(status: int, line: str):
        def answer():
            raise Unreachable(line, status)
        return answer

    redis = failing(503, "router: 503 control_unavailable: the rollout store (Redis) is unreachable")
    restarting = failing(500, "router: 500 internal server error")
    answers = iter([redis, restarting, lambda: STATE, restarting, lambda: _state(status="paused", reason="held")])
    lines: list[str] = []
    assert follow(lambda: next(answers)(), 3, lines.append, sleep=lambda s: None, clock=clock) == 4
    assert lines[0] == ("router: 503 control_unavailable: the rollout store (Redis) is unreachable; waiting up to "
                        "30 s for the router to answer again (it may be restarting, or its Redis unreachable)")
    assert lines[1].startswith("step 2/4  25%")
    assert lines[2] == ("router: 500 internal server error; waiting up to 30 s for the router to answer again "
                        "(it may be restarting, or its Redis unreachable)")
    with pytest.raises(Unreachable) as caught:  # 503 at 0, 10, 20 and 30 s: the budget is spent
        follow(redis, 3, lines.append, sleep=lambda s: None, clock=iter(range(0, 1000, 10)).__next__)
    assert (str(caught.value), caught.value.status) == (
        "router: 503 control_unavailable: the rollout store (Redis) is unreachable, still after 30 s", 503)


# -- promote's checks before any call ----------------------------------------------------------------------------


def test_promote_refuses_a_version_not_on_disk(capsys, repo_copy):
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "9")
    assert (code, out, err) == (1, "", f"error: digits v9 is not in {repo_copy} (versions there: v1, v2)\n")


def test_promote_refuses_a_version_that_does_not_validate(capsys, repo_copy):
    onnx2 = repo_copy / "digits" / "2" / "model.onnx"
    onnx2.write_bytes(onnx2.read_bytes() + b"\0")
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "2")
    assert (code, out) == (1, "")
    assert err == ("error: digits does not validate: digits/2: model.onnx does not match the sha256 in metadata.json "
                   "(and 1 more; see `python -m export validate`)\n")


def test_promote_refuses_a_version_outside_the_version_policy(capsys, repo_copy):
    config = read_config(repo_copy / "digits")
    VersionPolicy.parse("latest:1").apply(config)
    (repo_copy / "digits" / "config.pbtxt").write_text(render(config))
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "1")
    assert (code, out) == (1, "")
    assert err == ("error: digits v1 is outside the version policy latest:1 of digits/config.pbtxt, "
                   "so Triton would not load it (rebuild with --version-policy)\n")


def test_promote_says_when_triton_cannot_be_reached(capsys, tmp_path, serve):
    shutil.copytree(MODEL_REPOSITORY / "digits", tmp_path / "digits")
    seen: list = []
    router = serve("router", {("GET", "/admin/rollouts/digits"): (200, _state(model="digits", default_version=1,
                                                                                canary_version=None, status="idle"))},
                   seen)
    port = free_port()
    code, out, err = run(capsys, "--repository", str(tmp_path), "promote", "digits", "2", "--router", router.url,
                         "--triton", f"127.0.0.1:{port}")
    assert (code, out) == (1, f"disk: digits v2 validates in {tmp_path}\n")
    assert err.startswith(f"error: triton: cannot reach http://127.0.0.1:{port} (") and err.count("\n") == 1
    assert seen == [("router", "GET", "/admin/rollouts/digits", None)]  # a default is set: nothing to pin


# -- the default is pinned before Triton loads the version -------------------------------------------------------


def test_the_version_served_without_a_default_is_the_highest_ready_one_but_the_promoted():
    assert serving_version(models_answer("digits", {"1": "READY", "2": "READY", "3": "UNAVAILABLE"}), "digits", 3) == 2
    assert serving_version(models_answer("digits", {"1": "READY", "3": "READY"}), "digits", 3) == 1
    assert serving_version(models_answer("digits", {"2": "READY", "10": "READY"}), "digits", 3) == 10  # not "2" > "10"
    assert serving_version(models_answer("digits", {"3": "READY", "1": "LOADING"}), "digits", 3) is None
    assert serving_version(models_answer("digits", {}), "digits", 3) is None
    assert serving_version(models_answer("sentiment", {"1": "READY"}), "digits", 3) is None
    assert serving_version(None, "digits", 3) is None


def rollout_answers(model: str, state: dict, versions: dict, promoted: int) -> dict:
    """The router's answers that promote asks for: its state, its models, and a start that promotes at once."""
    path = f"/admin/rollouts/{model}"
    done = {**state, "status": "promoted", "default_version": promoted, "canary_version": None, "revision": 3}
    return {("GET", path): (200, state), ("GET", "/models"): (200, models_answer(model, versions)),
            ("PUT", path): (200, {**state, "revision": 2}), ("POST", f"{path}/start"): (200, done)}


def test_promote_pins_the_served_version_as_default_before_triton_loads(repo_copy, serve):
    seen: list = []
    idle = {"model": "digits", "revision": 0, "status": "idle", "default_version": None, "canary_version": None}
    router = serve("router", rollout_answers("digits", idle, {"1": "READY", "2": "READY"}, 2), seen)
    triton = serve("triton", {("GET", "/v2/models/digits/versions/2/ready"): (200, None)}, seen)
    lines: list[str] = []
    args = PromoteArgs(repo_copy, "digits", 2, router=router.url, triton=triton.url)
    assert promote(args, lines.append, sleep=lambda s: None, environ={}) == 0
    assert [(name, method, path) for name, method, path, _ in seen] == [
        ("router", "GET", "/admin/rollouts/digits"), ("router", "GET", "/models"),
        ("router", "PUT", "/admin/rollouts/digits"),  # before Triton is asked
        ("triton", "GET", "/v2/models/digits/versions/2/ready"),
        ("router", "GET", "/models"), ("router", "POST", "/admin/rollouts/digits/start")]
    assert seen[2][3] == {"default_version": 1, "reason": "export promote: pin the default before loading v2"}
    assert lines[:3] == [
        f"disk: digits v2 validates in {repo_copy}",
        "router: digits had no default (the highest READY version serves); pinned v1 before loading v2",
        "triton: digits v2 is READY"]
    assert lines[-1] == "promoted: digits v2 is the default (revision 3)"


def test_promote_refuses_when_no_other_version_is_ready_and_loads_nothing(capsys, repo_copy, serve):
    seen: list = []
    idle = {"model": "digits", "revision": 0, "status": "idle", "default_version": None, "canary_version": None}
    router = serve("router", rollout_answers("digits", idle, {"1": "UNAVAILABLE", "2": "READY"}, 2), seen)
    triton = serve("triton", {}, seen)
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "2", "--router", router.url,
                         "--triton", triton.url)
    assert (code, out) == (1, f"disk: digits v2 validates in {repo_copy}\n")
    assert err == ("error: the router has no READY version of digits but v2, so nothing to compare a canary with "
                   "(to serve v2 without a rollout, load it in Triton)\n")
    assert [(name, method, path) for name, method, path, _ in seen] == [
        ("router", "GET", "/admin/rollouts/digits"), ("router", "GET", "/models")]


@pytest.mark.parametrize("state,message", [
    ({"status": "progressing", "default_version": 1, "canary_version": 3},
     "a rollout of digits is already progressing (canary v3): it must end before another starts"),
    ({"status": "paused", "default_version": None, "canary_version": 3},
     "a rollout of digits is already paused (canary v3): it must end before another starts"),
    ({"status": "promoted", "default_version": 2, "canary_version": None},
     "v2 is already the default of digits: there is nothing to roll out"),
])
def test_promote_refuses_what_the_start_would_refuse_before_triton_loads(capsys, repo_copy, serve, state, message):
    seen: list = []
    router = serve("router", rollout_answers("digits", {"model": "digits", **state}, {"1": "READY"}, 2), seen)
    triton = serve("triton", {}, seen)
    code, out, err = run(capsys, "--repository", str(repo_copy), "promote", "digits", "2", "--router", router.url,
                         "--triton", triton.url, "--shadow", "5")
    assert (code, err) == (1, f"error: {message}\n")
    assert seen == [("router", "GET", "/admin/rollouts/digits", None)]
