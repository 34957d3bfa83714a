"""Upload plans on real media (issue 22, the runtime side): ``apply_plan`` (sizes, never upscaling,
bytes, PNG/JPEG, keyframes, audio), ``CloudImageSpec`` from flags, families and processor configs,
the router sending the planned request to the cloud (and the original to the edge) with the
``x-offload-upload-plan`` header and the log fields, and ``record --variants``."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image

from mllm_offload.decision import SEND_ALL, Thresholds, UploadPlan
from mllm_offload.errors import UserInputError
from mllm_offload.mas import compute_mas, frame_novelty, temporal_features
from mllm_offload.mllm_backends.base import AudioClip, CancelToken, Generation, ImageTooLargeError, MMRequest, image_size
from mllm_offload.mllm_backends.upload_plan import FAMILIES, CloudImageSpec, apply_plan, keyframe_indices, resize_image

SIDE64 = CloudImageSpec.side(64)


def photo(w: int = 1920, h: int = 1080, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A photo-like image: smooth gradients plus sensor-like noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x / w * 255, y / h * 255, (x + y) % 256], -1) + rng.normal(0, 18, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def flat(w: int = 400, h: int = 300) -> bytes:
    """A synthetic diagram: a few flat shapes on white, as PNG."""
    im = Image.new("RGB", (w, h), "white")
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    d.rectangle((40, 40, 180, 160), fill=(200, 30, 30))
    d.ellipse((220, 80, 360, 260), fill=(30, 30, 200))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def frame(level: int, mark: int | None = None) -> bytes:
    a = np.full((48, 64, 3), level, np.uint8)
    if mark is not None:
        a[:, mark:mark + 16] = 255 - level
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def tone(seconds: float = 1.0, sr: int = 16000) -> AudioClip:
    t = np.arange(int(seconds * sr)) / sr
    return AudioClip((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)


# ----------------------------------------------------------------------------- sizes


def test_model_res_sends_the_cloud_models_size_and_far_fewer_bytes():
    big = photo()
    p = apply_plan(MMRequest("what?", images=[big]), UploadPlan(image="model_res"), SIDE64)
    out = p.request.images[0]
    assert image_size(out) == (114, 64) == p.image_sizes[0]  # shortest side 64, aspect 16:9 kept (the model crops 64x64)
    assert out[:2] == b"\xff\xd8" and len(out) < len(big) / 50  # JPEG source -> JPEG, a few KB instead of ~1 MB
    assert p.changed and p.label == "image=model_res" and p.plan == UploadPlan(image="model_res")
    red = apply_plan(MMRequest("what?", images=[big]), UploadPlan(image="reduced"), SIDE64)
    assert image_size(red.request.images[0]) == (57, 32) and len(red.request.images[0]) < len(out)


def test_never_upscaled_and_small_images_sent_as_given():
    small = photo(50, 40, "PNG")
    req = MMRequest("what?", images=[small])
    p = apply_plan(req, UploadPlan(image="model_res"), SIDE64)
    assert not p.changed and p.request is req and p.request.images[0] is small
    assert p.label == "image=model_res"  # the policy's plan; it just changes nothing here
    r = apply_plan(req, UploadPlan(image="reduced"), SIDE64)  # half of 64 = 32 px < 40: smaller, not larger
    assert image_size(r.request.images[0]) == (40, 32)
    for spec in (SIDE64, FAMILIES["qwen2-vl-1280"], FAMILIES["smolvlm"], CloudImageSpec(box=(96, 48))):
        for w, h in ((30, 20), (4000, 3000), (1000, 30), (31, 4000)):
            for plan in ("model_res", "reduced"):
                t = spec.target_size(w, h, plan)
                assert t is None or (t[0] <= w and t[1] <= h and t[0] * t[1] < w * h)


def test_pixel_budget_follows_qwen_smart_resize():
    spec = FAMILIES["qwen2-vl-1280"]
    assert spec.max_pixels == 1280 * 28 * 28 and spec.factor == 28
    w, h = spec.target_size(4000, 3000, "model_res")  # type: ignore[misc]
    assert w % 28 == 0 and h % 28 == 0 and w * h <= spec.max_pixels and abs(w / h - 4 / 3) < 0.05
    rw, rh = spec.target_size(4000, 3000, "reduced")  # type: ignore[misc]
    assert rw % 28 == 0 and rh % 28 == 0 and abs(rw - w / 2) <= 28 and abs(rh - h / 2) <= 28
    assert spec.target_size(600, 400, "model_res") is None  # within the budget: as given
    assert spec.consumed_pixels(4000, 3000) == w * h


def test_png_kept_for_flat_content_and_jpeg_for_photos_and_never_more_bytes():
    diagram = flat()
    out = resize_image(diagram, (200, 150))
    assert out[:8] == b"\x89PNG\r\n\x1a\n"  # flat colours: PNG is smaller (and exact)
    noisy = resize_image(photo(800, 600, "PNG"), (400, 300))
    assert noisy[:2] == b"\xff\xd8"  # a photograph saved as PNG: JPEG 90 is smaller
    tiny_jpeg = photo(120, 90, "JPEG")
    assert len(resize_image(tiny_jpeg, (119, 89))) <= len(tiny_jpeg)
    arr = np.zeros((300, 400, 3), np.uint8)  # decoded inputs (arrays, PIL) are encoded too
    assert image_size(resize_image(arr, (100, 75))) == (100, 75)


def test_pixel_limits_are_checked_from_headers_first():
    req = MMRequest("what?", images=[photo(200, 100)])
    with pytest.raises(ImageTooLargeError):
        apply_plan(req, UploadPlan(image="model_res"), SIDE64, max_image_pixels=10_000)
    with pytest.raises(ImageTooLargeError):
        apply_plan(MMRequest("q", images=[photo(100, 100), photo(100, 100)]), UploadPlan(image="model_res"), SIDE64,
                   max_request_pixels=15_000)
    with pytest.raises(UserInputError):
        apply_plan(MMRequest("q", images=[b"not an image"]), UploadPlan(image="model_res"), SIDE64)


def test_unknown_cloud_size_sends_images_whole_but_applies_the_rest():
    req = MMRequest("what?", images=[photo(300, 200)], audio=tone())
    p = apply_plan(req, UploadPlan(image="model_res", audio="drop"), None)
    assert p.plan == UploadPlan(audio="drop") and p.label == "image=full,audio=drop"
    assert p.request.images[0] is req.images[0] and p.request.audio is None and req.audio is not None


# ----------------------------------------------------------------------------- specs


def test_specs_from_processor_configs(tmp_path):
    def spec_of(name: str, doc: dict[str, Any]) -> CloudImageSpec:
        d = tmp_path / name
        d.mkdir()
        (d / ("processor_config.json" if "image_processor" in doc else "preprocessor_config.json")).write_text(json.dumps(doc))
        return CloudImageSpec.from_model_dir(d)

    clip = spec_of("clip", {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}})
    assert clip.box == (336, 336) and clip.model_size(1920, 1080) == (597, 336)
    nested = spec_of("tf5", {"image_processor": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}})
    assert nested.box == (32, 32)
    assert spec_of("old", {"size": 224, "crop_size": 224}).box == (224, 224)
    qwen = spec_of("qwen", {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2,
                            "image_processor_type": "Qwen2VLImageProcessor"})
    assert (qwen.max_pixels, qwen.min_pixels, qwen.factor) == (12845056, 3136, 28)
    qwen_new = spec_of("qwen5", {"size": {"shortest_edge": 3136, "longest_edge": 1003520}, "patch_size": 14, "merge_size": 2,
                                 "image_processor_type": "Qwen2VLImageProcessorFast"})
    assert qwen_new.max_pixels == 1003520
    smol = spec_of("smol", {"size": {"longest_edge": 1536}, "max_image_size": {"longest_edge": 384}})
    assert smol.longest_edge == 1536 and smol.model_size(4000, 3000) == (1536, 1152)
    siglip = spec_of("siglip", {"size": {"height": 224, "width": 224}})
    assert siglip.box == (224, 224)
    with pytest.raises(UserInputError, match="cannot tell"):
        spec_of("none", {"image_mean": [0.5, 0.5, 0.5]})
    with pytest.raises(UserInputError, match="no preprocessor_config"):
        CloudImageSpec.from_model_dir(tmp_path)


def test_families_and_bad_specs():
    assert FAMILIES["llava-1.5"].box == (336, 336) and FAMILIES["shapes-cloud"].box == (64, 64)
    assert FAMILIES["smolvlm2"].longest_edge == 2048 and FAMILIES["internvl"].max_pixels == 12 * 448 * 448
    with pytest.raises(UserInputError, match=r"did you mean llava-1\.5"):
        CloudImageSpec.family("llava1.5")
    for bad in ({"box": (0, 10)}, {}, {"box": (10, 10), "max_pixels": 100}, {"max_pixels": 10, "min_pixels": 100}):
        with pytest.raises(UserInputError):
            CloudImageSpec(**bad)


# ----------------------------------------------------------------------------- video and audio


def test_keyframes_keep_novel_frames_in_order_and_at_least_two():
    assert keyframe_indices([1.0, 0.01, 0.02, 0.7, 0.03]) == [0, 3]
    assert keyframe_indices([1.0, 0.01, 0.02, 0.01]) == [0, 2]  # nothing novel: the most novel other frame
    assert keyframe_indices([1.0, 0.0, 0.0]) == [0, 2]  # a tie: the later frame
    assert keyframe_indices([1.0]) == [0] and keyframe_indices([]) == []
    clip = [frame(40), frame(40), frame(41), frame(40, mark=10), frame(40, mark=10), frame(200)]
    nov = frame_novelty(clip)
    assert nov[0] == 1.0 and nov[1] < 0.6 and nov[2] < 0.6 and nov[3] >= 0.6 and nov[4] < 0.6 and nov[5] >= 0.6
    p = apply_plan(MMRequest("what happens?", video=clip), UploadPlan(video="keyframes"), None, frame_novelty)
    assert p.frames == (0, 3, 5) and p.request.video == [clip[0], clip[3], clip[5]] and p.label == "video=keyframes"
    same = apply_plan(MMRequest("q", video=clip), UploadPlan(video="keyframes"), None, nov)  # values instead of the function
    assert same.frames == (0, 3, 5)
    with pytest.raises(ValueError, match="novelty"):
        apply_plan(MMRequest("q", video=clip), UploadPlan(video="keyframes"), None)
    with pytest.raises(ValueError, match="5 frame novelty values for 6 frames"):
        apply_plan(MMRequest("q", video=clip), UploadPlan(video="keyframes"), None, nov[:5])


def test_per_frame_novelty_agrees_with_the_clip_feature():
    clip = [frame(40 + 3 * i, mark=(i * 7) % 40 if i % 2 else None) for i in range(6)]
    nov = frame_novelty(clip)
    tf = temporal_features(clip)
    assert nov[1:].mean() == pytest.approx(tf["temporal"], abs=1e-9)  # every frame difference below 32 levels here
    assert compute_mas("q", video=clip)["temporal"] == pytest.approx(tf["temporal"])


def test_audio_dropped_and_other_modalities_untouched():
    img = photo(300, 200)
    req = MMRequest("what is said?", images=[img], audio=tone())
    p = apply_plan(req, UploadPlan(audio="drop"), SIDE64)
    assert p.request.audio is None and p.request.images[0] is img and p.label == "image=full,audio=drop" and p.changed
    both = apply_plan(req, UploadPlan(image="model_res", audio="drop"), SIDE64)
    assert both.label == "image=model_res,audio=drop" and both.request.audio is None and image_size(both.request.images[0]) == (96, 64)
    assert req.audio is not None and req.images[0] is img  # the caller's request is not modified
    text = apply_plan(MMRequest("hi"), UploadPlan(image="reduced", video="keyframes", audio="drop"), SIDE64)
    assert text.plan == SEND_ALL and text.label == "text" and not text.changed


# ----------------------------------------------------------------------------- the router


class Fake:
    """Answers ``text`` at once with confidence ``conf``; keeps every request it got."""

    def __init__(self, text: str, conf: float = 0.9) -> None:
        self.text, self.conf, self.name, self.got = text, conf, f"fake-{text}", []

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: Any = None) -> Generation:
        self.got.append(request)
        await asyncio.sleep(0)
        return Generation(text=self.text, tokens=[self.text], token_logprobs=[-0.1], in_tokens=3, out_tokens=1, backend=self.name,
                          confidence=self.conf)

    async def aclose(self) -> None:
        return None


class Planner:
    """A duck-typed policy that chooses ``plan`` with fixed thresholds (``None``: no plan, no ``decide``)."""

    def __init__(self, th: Thresholds, plan: UploadPlan) -> None:
        self.th, self.plan, self.name = th, plan, "planner"

    def thresholds(self, obs: Any) -> Thresholds:
        return self.th

    def decide(self, obs: Any) -> tuple[Thresholds, UploadPlan]:
        return self.th, self.plan


class NoPlan:
    name = "noplan"

    def __init__(self, th: Thresholds) -> None:
        self.th = th

    def thresholds(self, obs: Any) -> Thresholds:
        return self.th


CLOUD = Thresholds(0.0, 0.0, 1.0)
SPECULATE = Thresholds(0.0, 1.0, 1.0)  # speculative; the edge's 0.9 is never enough
EDGE_FIRST = Thresholds(1.0, 1.0, 0.5)  # edge first; 0.9 accepted
ESCALATE = Thresholds(1.0, 1.0, 0.95)  # edge first; 0.9 escalates
MODEL_RES_DROP = UploadPlan(image="model_res", audio="drop")


def route(policy: Any, request: MMRequest, log_dir: Path | None = None, cloud_image: CloudImageSpec | None = SIDE64):
    from mllm_offload.runtime.router import Router, RouterConfig
    from mllm_offload.runtime.tracelog import TraceLog

    edge, cloud = Fake("edge"), Fake("cloud")
    log = TraceLog(log_dir, {"policy": policy.name}) if log_dir is not None else None
    router = Router(edge, cloud, policy, RouterConfig(), log, cloud_image=cloud_image)

    async def go():
        ans = await router.generate(request)
        await router.aclose()
        return ans

    return asyncio.run(go()), edge, cloud


def log_records(d: Path) -> list[dict[str, Any]]:
    from mllm_offload.trace_format import TraceRecord

    recs = [json.loads(x) for f in sorted(d.glob("route-*.jsonl")) for x in f.read_text().splitlines()[1:]]
    for r in recs:
        TraceRecord.model_validate(r)
    return recs


@pytest.mark.parametrize("th", [CLOUD, SPECULATE, ESCALATE], ids=["cloud", "speculative", "edge-first-escalated"])
def test_router_sends_the_planned_request_to_the_cloud_and_the_original_to_the_edge(th, tmp_path):
    big = photo()
    ans, edge, cloud = route(Planner(th, MODEL_RES_DROP), MMRequest("what?", images=[big], audio=tone()), tmp_path)
    sent = cloud.got[-1]
    assert image_size(sent.images[0]) == (114, 64) and sent.audio is None
    for r in edge.got:
        assert r.images[0] == big and r.audio is not None
    assert ans.answered_by == "cloud" and ans.upload_plan == "image=model_res,audio=drop"
    assert ans.bytes_sent is not None and ans.bytes_sent < 20_000
    (rec,) = log_records(tmp_path)
    r = rec["route"]
    assert r["upload_plan"] == "image=model_res,audio=drop" and r["bytes_sent"] == ans.bytes_sent
    assert set(r["payload_sent"]) == {"text", "image"} and r["payload_sent"]["image"] < rec["payload_bytes"]["image"] / 50
    assert r["upload_plan_s"] > 0 and "upload_plan_error" not in r


def test_an_accepted_edge_answer_never_pays_for_the_plan(tmp_path, monkeypatch):
    import mllm_offload.runtime.router as router_mod

    calls = []
    monkeypatch.setattr(router_mod, "apply_plan", lambda *a, **k: calls.append(1))
    ans, edge, cloud = route(Planner(EDGE_FIRST, MODEL_RES_DROP), MMRequest("what?", images=[photo(400, 300)], audio=tone()), tmp_path)
    assert ans.answered_by == "edge" and not cloud.got and not calls and edge.got[0].audio is not None
    assert ans.upload_plan == "image=model_res,audio=drop" and ans.bytes_sent is None
    (rec,) = log_records(tmp_path)
    assert rec["route"]["bytes_sent"] is None and rec["route"]["payload_sent"] is None


def test_a_policy_without_a_plan_sends_everything_whole_without_planning(tmp_path, monkeypatch):
    import mllm_offload.runtime.router as router_mod

    monkeypatch.setattr(router_mod, "apply_plan", lambda *a, **k: pytest.fail("no plan, nothing to apply"))
    big = photo(800, 600)
    ans, _, cloud = route(NoPlan(CLOUD), MMRequest("what?", images=[big], audio=tone()), tmp_path)
    assert cloud.got[0].images[0] == big and cloud.got[0].audio is not None
    assert ans.upload_plan == "image=full,audio=keep"
    (rec,) = log_records(tmp_path)
    assert rec["route"]["bytes_sent"] == sum(rec["payload_bytes"].values())


def test_router_without_the_cloud_size_sends_images_whole(tmp_path):
    big = photo(800, 600)
    ans, _, cloud = route(Planner(CLOUD, MODEL_RES_DROP), MMRequest("what?", images=[big], audio=tone()), tmp_path, cloud_image=None)
    assert cloud.got[0].images[0] == big and cloud.got[0].audio is None and ans.upload_plan == "image=full,audio=drop"


def test_a_plan_that_fails_sends_the_request_whole_and_logs_why(tmp_path, monkeypatch):
    import mllm_offload.runtime.router as router_mod

    def broken(*a: Any, **k: Any) -> Any:
        raise UserInputError("image 0: Pillow cannot encode it")

    monkeypatch.setattr(router_mod, "apply_plan", broken)
    big = photo(800, 600)
    ans, _, cloud = route(Planner(CLOUD, MODEL_RES_DROP), MMRequest("what?", images=[big], audio=tone()), tmp_path)
    assert ans.answered_by == "cloud" and cloud.got[0].images[0] == big and cloud.got[0].audio is not None
    assert ans.upload_plan == "image=full,audio=keep"
    (rec,) = log_records(tmp_path)
    assert "Pillow cannot encode" in rec["route"]["upload_plan_error"]


def test_the_server_shows_the_plan_in_a_header_and_the_body():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import base64

    from fastapi.testclient import TestClient

    from mllm_offload.runtime.router import Router, RouterConfig
    from mllm_offload.runtime.server import UPLOAD_PLAN_HEADER, create_route_app

    cloud = Fake("cloud")
    router = Router(Fake("edge"), cloud, Planner(CLOUD, MODEL_RES_DROP), RouterConfig(), cloud_image=SIDE64)
    url = "data:image/jpeg;base64," + base64.b64encode(photo(640, 480)).decode()
    msgs = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": url}}]}]
    with TestClient(create_route_app(router)) as client:
        r = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.headers[UPLOAD_PLAN_HEADER] == "image=model_res"
        assert r.json()["offload"]["upload_plan"] == "image=model_res" and 0 < r.json()["offload"]["bytes_sent"] < 10_000
        assert image_size(cloud.got[0].images[0]) == (85, 64)
        s = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True})
        assert s.status_code == 200 and s.headers[UPLOAD_PLAN_HEADER] == "text"


def test_route_refuses_a_bad_cloud_image_flag_in_one_line(capsys):
    from mllm_offload.cli import main

    rc = main(["route", "--edge", "http://127.0.0.1:9/v1", "--cloud", "http://127.0.0.1:9/v1", "--policy", "moaoff",
               "--cloud-image-family", "qwen2vl", "--port", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--cloud-image-family" in err and "did you mean qwen2-vl" in err
    with pytest.raises(SystemExit) as e:
        main(["route", "--edge", "x", "--cloud", "y", "--policy", "moaoff", "--cloud-image-size", "64", "--cloud-image-pixels", "1000"])
    assert e.value.code == 2


# ----------------------------------------------------------------------------- record --variants


@pytest.fixture(scope="module")
def media_dataset(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("variants")
    (d / "a.jpg").write_bytes(photo(160, 120, "JPEG", seed=1))
    (d / "b.png").write_bytes(flat(96, 80))
    for i, f in enumerate([frame(40), frame(40), frame(40, mark=20), frame(41, mark=20)]):
        (d / f"f{i}.png").write_bytes(f)
    import wave

    with wave.open(str(d / "s.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((tone(0.5).samples * 32767).astype("<i2").tobytes())
    rows = [
        {"id": "img", "question": "What colour is it?", "image": "a.jpg", "answers": ["red"]},
        {"id": "png", "question": "What shape is it?", "image": "b.png", "answers": ["circle"], "audio": "s.wav"},
        {"id": "vid", "question": "What moves?", "video": [f"f{i}.png" for i in range(4)], "answers": ["bar"]},
    ]
    (d / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{d / 'items.jsonl'}"


def test_record_variants_writes_a_trace_with_a_plan_table(tiny_model_dir, media_dataset, tmp_path, capsys):
    from mllm_offload.cli import main
    from mllm_offload.trace_format import load_trace

    out = tmp_path / "v.jsonl"
    rc = main(["record", "--edge", str(tiny_model_dir), "--cloud", str(tiny_model_dir), "--dataset", media_dataset, "--out", str(out),
               "--max-new-tokens", "3", "--quiet", "--unsupported", "ignore", "--variants", "model_res,reduced,keyframes,no_audio"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    tr = load_trace(out)
    assert tr.plans is not None and tr.meta["variants"] == ["model_res", "reduced", "keyframes", "no_audio"]
    assert tr.meta["cloud_image"].startswith("side 32")  # the tiny model's processor config
    recs = {r.id: r for r in tr.records}
    img, png, vid = recs["img"].variants, recs["png"].variants, recs["vid"].variants
    assert set(img) == {"model_res", "reduced"} and set(png) == {"model_res", "reduced", "no_audio"} and set(vid) == {"keyframes"}
    assert img["model_res"].payload_bytes["image"] < recs["img"].payload_bytes["image"]
    assert img["reduced"].payload_bytes["image"] < img["model_res"].payload_bytes["image"]
    assert png["no_audio"].payload_bytes == {"audio": 0} and png["no_audio"].tokens == {"audio": 0}
    assert vid["keyframes"].payload_bytes["video"] < recs["vid"].payload_bytes["video"]  # 2 of the 4 frames are near-duplicates
    for v in (*img.values(), *png.values(), *vid.values()):
        assert v.cloud.score in (0.0, 1.0) and v.cloud.latency_s >= 0
    # the plan table prices what each plan sends
    i = list(tr.ids).index("img")
    assert tr.plans.payload_bytes[i, UploadPlan(image="model_res").index] < tr.plans.payload_bytes[i, SEND_ALL.index]


def test_record_refuses_unknown_variants_in_one_line(capsys):
    from mllm_offload.cli import main

    for bad, says in (("model_res,lowres", "unknown variant 'lowres'"), ("keyframe", "did you mean keyframes"),
                      ("no_audio+model_res", "write 'no_audio+model_res' as 'model_res+no_audio'"), ("model_res+reduced", "twice")):
        rc = main(["record", "--edge", "http://127.0.0.1:9/v1", "--cloud", "http://127.0.0.1:9/v1", "--dataset", "jsonl:/nonexistent.jsonl",
                   "--out", "/nonexistent/x.jsonl", "--variants", bad])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and err.startswith("mllm-offload record: error: --variants: ") and says in err, err
    rc = main(["record", "--edge", "http://127.0.0.1:9/v1", "--cloud", "http://127.0.0.1:9/v1", "--dataset", "jsonl:/nonexistent.jsonl",
               "--out", "/nonexistent/x.jsonl", "--variants", "model_res"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--cloud-image-size" in err and err.count("\n") == 0


@pytest.mark.slow
def test_route_subprocess_reads_the_cloud_size_from_a_local_folder_and_sends_the_header(tiny_model_dir, tmp_path):
    httpx = pytest.importorskip("httpx")
    import base64

    from routing_helpers import cli, free_port, start, stop

    from mllm_offload.artifact import HeuristicSpec, write_artifact

    policy = write_artifact(tmp_path / "always-cloud-model-res", kind="heuristic", name="msao-model-res, always cloud",
                            heuristic=HeuristicSpec(rule="msao-model-res", params={"slo_s": 2.0, "base_low": 0.0, "base_high": 0.0,
                                                                                     "k_net": 0.0, "k_load": 0.0}))
    port, logs = free_port(), tmp_path / "logs"
    url = f"http://127.0.0.1:{port}"
    proc = start(cli("route", "--edge", str(tiny_model_dir), "--cloud", str(tiny_model_dir), "--policy", str(policy), "--port", str(port),
                     "--log-dir", str(logs)), url)
    try:
        img = "data:image/jpeg;base64," + base64.b64encode(photo(320, 240)).decode()
        msgs = [{"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": img}}]}]
        r = httpx.post(url + "/v1/chat/completions", json={"messages": msgs, "max_tokens": 3}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-offload-upload-plan"] == "image=model_res" and r.headers["x-offload-mode"] == "cloud"
    finally:
        stop(proc)
    out = proc.stdout.read() if proc.stdout else ""
    assert "upload plans: cloud images side 32" in out and "processor_config.json" in out
    (rec,) = log_records(logs)
    assert rec["route"]["upload_plan"] == "image=model_res" and rec["route"]["payload_sent"]["image"] < rec["payload_bytes"]["image"] / 10
