"""export.py on tiny hand-made runs (32 px, 8-d noise, untrained generators with enlarged weights so that the
images are not flat grey): the exported files agree with Keras in their own runtimes, a disagreement writes
nothing, and the web page runs the generator in headless Chromium.

The browser test skips where Playwright, Chromium (Debian: apt-get install chromium) or onnxruntime-web (in the
cache; `python -c "import export; export.web_runtime()"` fetches it with npm) is absent. FACEGAN_WEB_RUN=RUN
runs it on a trained run instead, and FACEGAN_WEB_SCREENSHOT=PATH keeps its screenshot of the page.
"""
import importlib.util
import io
import json
import os
import shutil
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
from PIL import Image

from facegan import data_io
import export
import generate
import models

LATENT, SIZE = 8, 32
PIXEL_TOLERANCE = 2  # browser vs Keras, in 8-bit levels: WebAssembly sums in another order than TensorFlow


def make_run(path, precision, upsample="transposed"):
    """What train.py leaves behind, as far as export.py reads it: config.json, generator.keras, d_losses.npy."""
    import keras
    os.makedirs(path)
    if precision == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator = models.build_generator(latent_dim=LATENT, image_size=SIZE, width=8, upsample=upsample)
    keras.mixed_precision.set_global_policy("float32")
    for layer in generator.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(layer.kernel * 5)
    generator.save(os.path.join(path, "generator.keras"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"latent_dim": LATENT, "image_size": SIZE, "epochs": 3, "precision": precision,
                   "preset": "best", "ema": 0.999, "g_width": 8, "upsample": upsample}, f)
    np.save(os.path.join(path, "d_losses.npy"), np.zeros(2, np.float32))
    return str(path)


@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_a_bf16_run_exports_float32_onnx_savedmodel_and_litert_that_match_keras_at_any_batch(tmp_path, capsys,
                                                                                              upsample):
    import onnx
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    run = make_run(tmp_path / "bf16_run", "bf16", upsample)
    assert export.main([run, "--no-web"]) == 0
    assert "ONNX Runtime vs Keras" in capsys.readouterr().out
    out = os.path.join(run, "export")
    info = json.load(open(os.path.join(out, "generator.json")))
    assert (info["latent_dim"], info["image_size"], info["epoch"]) == (LATENT, SIZE, 2)
    assert info["recipe"]["preset"] == "best" and info["recipe"]["ema"] == 0.999
    assert (info["precision_trained"], info["precision_exported"], info["fid"]) == ("bf16", "fp32", None)
    assert all(d <= export.TOLERANCE for d in info["check"]["max_abs_difference"].values())
    assert not os.path.exists(os.path.join(run, "web"))

    # every file maps float32 z of any batch size to what Keras makes of it
    z = data_io.sample_z(3, LATENT, seed=7)
    keras_float32 = export.export_copy(data_io.load_generator_file(os.path.join(run, "generator.keras")))
    expected = keras_float32.predict_on_batch(z)
    graph = onnx.load(os.path.join(out, "generator.onnx")).graph
    casts = [a.i for node in graph.node if node.op_type == "Cast" for a in node.attribute if a.name == "to"]
    assert onnx.TensorProto.BFLOAT16 not in {t.data_type for t in graph.initializer} | set(casts)
    session = onnxruntime.InferenceSession(os.path.join(out, "generator.onnx"))
    (z_input,), (image_output,) = session.get_inputs(), session.get_outputs()
    assert (z_input.name, z_input.type, z_input.shape) == ("z", "tensor(float)", ["batch", LATENT])
    assert (image_output.name, image_output.shape) == ("image", ["batch", SIZE, SIZE, 3])
    from_onnx = session.run(None, {"z": z})[0]
    savedmodel = tf.saved_model.load(os.path.join(out, "generator_savedmodel"))
    from_savedmodel = savedmodel.serve(z).numpy()
    from_litert = next(iter(Interpreter(os.path.join(out, "generator.tflite")).get_signature_runner()(z=z).values()))
    for images in (from_onnx, from_savedmodel, from_litert):
        assert images.dtype == np.float32 and images.shape == (3, SIZE, SIZE, 3)
        assert np.abs(images - expected).max() < export.TOLERANCE
    assert np.abs(expected).max() > 0.1  # not a flat image


def test_an_export_that_disagrees_with_keras_exits_3_in_one_line_and_leaves_the_last_export(tmp_path, capsys,
                                                                                            monkeypatch):
    run = make_run(tmp_path / "run", "fp32")
    os.makedirs(os.path.join(run, "export"))
    with open(os.path.join(run, "export", "generator.json"), "w") as f:
        f.write('{"epoch": 1}')  # an earlier export
    write_onnx = export.WRITERS["onnx"]

    def write_another_generator(model, path):
        import keras
        other = keras.models.clone_model(model)
        other.set_weights([w * 1.05 for w in model.get_weights()])
        other.predict_on_batch(np.zeros((1, LATENT), np.float32))  # Keras exports only models that have run
        write_onnx(other, path)
    monkeypatch.setitem(export.WRITERS, "onnx", write_another_generator)
    assert export.main([run, "--formats", "onnx", "--no-web"]) == export.EXIT_MISMATCH
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generator.onnx disagrees with Keras" in err[0] and "nothing written" in err[0]
    assert os.listdir(os.path.join(run, "export")) == ["generator.json"]
    assert open(os.path.join(run, "export", "generator.json")).read() == '{"epoch": 1}'
    assert sorted(os.listdir(run)) == ["config.json", "d_losses.npy", "export", "generator.keras"]  # no temporaries



def test_a_file_its_runtime_cannot_run_exits_3_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run", "fp32")

    def runtime_that_refuses(path):
        def run(z):
            raise RuntimeError("Select TensorFlow op(s) are not supported by this interpreter.\nNode 36 failed")
        return run
    monkeypatch.setitem(export.RUNNERS, "onnx", runtime_that_refuses)
    assert export.main([run, "--formats", "onnx", "--no-web"]) == export.EXIT_MISMATCH
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generator.onnx does not run in ONNX Runtime: Select TensorFlow op(s)" in err[0]
    assert sorted(os.listdir(run)) == ["config.json", "d_losses.npy", "generator.keras"]  # nothing half-written

def test_page_seeds_name_standard_normal_noise_the_same_at_every_latent_size():
    z = export.seed_z(range(1000), 100)
    assert z.dtype == np.float32 and z.shape == (1000, 100)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert np.array_equal(export.seed_z([5, 5], 100)[1], z[5]) and np.array_equal(export.seed_z([5], 7)[0], z[5, :7])
    assert len(np.unique(z[:, 0])) == 1000


def test_serving_needs_a_page_and_serves_it_on_localhost_with_the_headers_for_threads(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert export.main([str(tmp_path), "--serve"]) == 2
    assert "no web page" in capsys.readouterr().err.strip()
    (tmp_path / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm")
    server = export.make_server(str(tmp_path), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/ort-wasm-simd-threaded.wasm") \
                as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.shutdown()
        server.server_close()


# ----- the page in headless Chromium ---------------------------------------------------------------------------

def chromium_or_skip():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Playwright is not installed (pip install -r requirements.txt)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    try:
        export.web_runtime(install=False)
    except data_io.DataError as error:
        pytest.skip(str(error))
    return chromium


def canvas_rgb(page, selector, index=0):
    rgba = page.evaluate("([selector, index]) => { const c = document.querySelectorAll(selector)[index]; "
                         "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }",
                         [selector, index])
    size = int(round((len(rgba) // 4) ** 0.5))
    return np.array(rgba, np.uint8).reshape(size, size, 4)[..., :3]


def differs(a, b):
    return np.abs(a.astype(int) - b.astype(int)).mean() > 1


def close(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max() <= PIXEL_TOLERANCE


@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_the_web_page_draws_keras_faces_and_its_walk_and_arithmetic_change_the_picture(tmp_path, upsample):
    from playwright.sync_api import sync_playwright
    chromium = chromium_or_skip()
    run = os.environ.get("FACEGAN_WEB_RUN") or make_run(tmp_path / "run", "fp32", upsample)
    export.export(run, formats=("onnx",))
    generator = data_io.load_generator_file(os.path.join(run, "generator.keras"))
    latent = generator.input_shape[-1]
    server = export.make_server(os.path.join(run, "web"), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.time()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 760}, accept_downloads=True)
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/?start=1234")
            page.wait_for_function("facegan.stats.firstGridMs !== null || facegan.error !== null", timeout=60000)
            assert page.evaluate("facegan.error") is None
            first_grid = page.evaluate("facegan.stats")

            # the page's z of a seed is export.seed_z's, and its faces are Keras' faces of that z
            seeds = [1234, 1235, 1236]
            z = export.seed_z(seeds, latent)
            page_z = np.array(page.evaluate(f"{seeds}.map((s) => Array.from(facegan.seedZ(s, {latent})))"))
            assert np.abs(page_z - z).max() < 1e-6
            keras_faces = data_io.generate_images(generator, z)
            for i in range(len(seeds)):
                assert close(canvas_rgb(page, "#grid canvas", i), keras_faces[i])
            assert differs(keras_faces[0], keras_faces[1])

            page.click("#new-faces")  # the next 32 seeds, on a warm runtime
            page.wait_for_function("facegan.stats.grids === 2")
            warm = page.evaluate("facegan.stats")
            seeds = [1234 + 32 + i for i in range(4)]
            z = export.seed_z(seeds, latent)
            faces = [canvas_rgb(page, "#grid canvas", i) for i in range(4)]
            assert close(faces[0], data_io.generate_images(generator, z[:1])[0])

            # pick a face: its seed shows; keep it; save it as PNG
            page.locator("#grid canvas").nth(0).click()
            assert page.text_content("#picked-label") == f"seed {seeds[0]}"
            page.click("#keep")
            page.wait_for_function("document.querySelectorAll('#kept canvas').length === 1")
            with page.expect_download() as download:
                page.click("#save")
            saved = cv2.imread(download.value.path())[..., ::-1]
            assert download.value.suggested_filename == f"facegan_seed_{seeds[0]}.png"
            assert np.array_equal(saved, faces[0])

            # the walk: generate.py's slerp; the slider moves along it
            page.click("#walk-from")
            page.locator("#grid canvas").nth(1).click()
            page.click("#walk-to")
            page.wait_for_function("document.getElementById('walk').dataset.t === '0.5'")
            middle = canvas_rgb(page, "#walk")
            assert close(middle, data_io.generate_images(generator, generate.slerp(z[0], z[1], [0.5]))[0])
            page.fill("#walk-t", "0")
            page.wait_for_function("document.getElementById('walk').dataset.t === '0'")
            assert close(canvas_rgb(page, "#walk"), faces[0]) and differs(canvas_rgb(page, "#walk"), middle)

            # arithmetic: A - B + C, then another C changes the result
            for i, slot in ((0, "a"), (1, "b"), (2, "c")):
                page.locator("#grid canvas").nth(i).click()
                page.click(f"#add-{slot}")
            label = f"{seeds[0]} - {seeds[1]} + {seeds[2]}"
            page.wait_for_function(f"document.getElementById('arithmetic').dataset.label === '{label}'")
            result = canvas_rgb(page, "#arithmetic")
            assert close(result, data_io.generate_images(
                generator, generate.face_arithmetic(z, [0], [1], [2])[None])[0])
            page.click("#clear-c")
            page.locator("#grid canvas").nth(3).click()
            page.click("#add-c")
            page.wait_for_function("document.getElementById('arithmetic').dataset.label === "
                                   f"'{seeds[0]} - {seeds[1]} + {seeds[3]}'")
            other = canvas_rgb(page, "#arithmetic")
            assert differs(other, result)
            assert close(other, data_io.generate_images(generator, generate.face_arithmetic(z, [0], [1], [3])[None])[0])

            page.fill("#walk-t", "50")
            page.wait_for_function("document.getElementById('walk').dataset.t === '0.5'")
            page.locator("#grid canvas").nth(5).click()
            screenshot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")  # 256 colours: a small PNG
            screenshot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                os.environ.get("FACEGAN_WEB_SCREENSHOT") or tmp_path / "web_page.png", optimize=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"\nweb page: first grid of {first_grid['firstGridFaces']} faces {first_grid['firstGridMs']:.0f} ms after "
          f"opening (model ready at {first_grid['modelMs']:.0f} ms), {first_grid['facesPerSecond']:.0f} faces/s "
          f"cold, {warm['facesPerSecond']:.0f} faces/s warm, {warm['threads']} thread(s); "
          f"browser part {time.time() - started:.1f} s")


# ----- what generator.json says is what was exported ---------------------------------------------------------

def _history(epochs, steps_per_epoch=2):
    from facegan import history as history_log
    history = history_log.new_history()
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            history_log.record_step(history, {key: 0.5 for key in history_log.STEP_KEYS})
        history_log.record_epoch(history, epoch, steps_per_epoch, 16, 1.0)
    return history


def _save_as_trained(run, epochs):
    """generator.keras as train.py saves it after `epochs` epochs (with its record), and d_losses.npy to match."""
    from facegan import run_state
    generator = data_io.load_generator_file(os.path.join(run, "generator.keras"))
    run_state.save_model(os.path.join(run, "generator.keras"), generator, _history(epochs))
    np.save(os.path.join(run, "d_losses.npy"), np.zeros(epochs, np.float32))


def test_generator_json_names_the_epoch_and_bytes_of_the_generator_it_exported_while_the_run_moves_on(
        tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", "fp32")
    _save_as_trained(run, 13)
    exported = data_io.file_digest(os.path.join(run, "generator.keras"))
    expected = data_io.generate_images(data_io.load_generator_file(os.path.join(run, "generator.keras")),
                                       data_io.sample_z(4, LATENT, 1))
    check = export.check_export

    def check_while_training_goes_on(*args, **kwargs):  # the run closes two more epochs meanwhile
        import keras
        other = models.build_generator(latent_dim=LATENT, image_size=SIZE, width=8)
        for layer in other.layers:
            if hasattr(layer, "kernel"):
                layer.kernel.assign(layer.kernel * 7)
        keras.models.save_model(other, os.path.join(run, "generator.keras"))
        np.save(os.path.join(run, "d_losses.npy"), np.zeros(15, np.float32))
        return check(*args, **kwargs)
    monkeypatch.setattr(export, "check_export", check_while_training_goes_on)
    info = export.export(run, formats=("onnx",), web=False)
    assert info["epoch"] == 13 and info["generator_sha1"] == exported
    import onnxruntime
    session = onnxruntime.InferenceSession(os.path.join(run, "export", "generator.onnx"))
    onnx_faces = data_io.to_uint8(session.run(None, {"z": data_io.sample_z(4, LATENT, 1)})[0])
    assert np.abs(onnx_faces.astype(int) - expected).max() <= 1  # the ONNX file is epoch 13's generator


def test_an_fid_is_shown_only_beside_the_generator_it_was_measured_on(tmp_path):
    run = make_run(tmp_path / "run", "fp32")
    _save_as_trained(run, 3)
    digest = data_io.file_digest(os.path.join(run, "generator.keras"))
    os.makedirs(os.path.join(run, "eval"))
    for scored, shown in ((digest, True), ("sha1:" + "0" * 40, False)):
        with open(os.path.join(run, "eval", "metrics.json"), "w") as f:
            json.dump({"epochs_trained": 3, "systems": [{"system": "run", "fid": 80.5, "fid_n": 100,
                                                         "generator_sha1": scored}]}, f)
        info = export.export(run, formats=("onnx",), web=False)
        assert (info["fid"] is not None) == shown
        if shown:
            assert info["fid"] == {"fid": 80.5, "kid": None, "n": 100, "epoch": 3}


def test_a_damaged_copy_of_onnxruntime_web_in_the_cache_is_never_copied_to_the_page(tmp_path, monkeypatch):
    from facegan import inception
    dist = tmp_path / "npm" / "node_modules" / export.ORT_WEB / "dist"
    dist.mkdir(parents=True)
    (dist.parent / "package.json").write_text(json.dumps({"version": export.ORT_WEB_VERSION}))
    for name in export.ORT_WEB_FILES:
        (dist / name).write_bytes(b"// cut off")
    monkeypatch.setattr(inception, "cache_dir", lambda: tmp_path)
    with pytest.raises(data_io.DataError, match="with the files it was released with"):
        export.web_runtime(install=False)


# ----- the page and its server trust nothing they read ---------------------------------------------------------

def _status(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_server_serves_the_pages_own_files_and_nothing_else(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    for name in ("index.html", "facegan.js", "generator.json"):
        (web / name).write_text("page")
    (web / "notes.txt").write_text("not the page's")  # something else in the folder
    (web / "private").mkdir()
    (web / "private" / "key").write_text("secret")
    (tmp_path / "config.json").write_text("{}")
    os.symlink(tmp_path / "config.json", web / "generator.onnx")  # a page file's name, pointing outside
    server = export.make_server(str(web), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _status(base + "/") == _status(base + "/facegan.js?v=2") == _status(base + "/generator.json") == 200
        for path in ("/notes.txt", "/private/", "/private/key", "/generator.onnx", "/../config.json",
                     "/%2e%2e/config.json", "/index.html/..%2fnotes.txt", "//etc/passwd"):
            assert _status(base + path) == 404, path
        assert _status(base + "/index.html", {"Host": "attacker.example"}) == 403  # a name rebound to 127.0.0.1
        assert _status(base + "/index.html", {"Host": f"localhost:{server.server_address[1]}"}) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_checks_the_url_the_seed_box_stored_faces_and_generator_json_with_a_visible_message(tmp_path):
    from playwright.sync_api import sync_playwright
    chromium = chromium_or_skip()
    run = make_run(tmp_path / "run", "fp32")
    info = export.export(run, formats=("onnx",))
    web = os.path.join(run, "web")
    server = export.make_server(web, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    good = {"label": "seed 5", "seed": 5, "z": export.seed_z([5], LATENT)[0].tolist()}
    stored = [good, {"label": 5}, {"label": "short", "seed": 1, "z": [1, 2]}, "x", {**good, "seed": -1}]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page()
            page.add_init_script(f"localStorage.setItem('facegan-kept:{info['generator_sha1']}', "
                                 f"{json.dumps(json.dumps(stored))})")
            page.goto(url + "?start=12abc")
            page.wait_for_function("facegan.stats.firstGridMs !== null || facegan.error !== null", timeout=60000)
            assert page.evaluate("facegan.error") is None
            assert "?start=12abc is not a page seed" in page.text_content("#notice")
            assert page.is_visible("#notice")
            # the stored faces: the readable one kept, the four others dropped and said
            page.wait_for_function("document.querySelectorAll('#kept canvas').length === 1")
            page.reload()
            page.wait_for_function("facegan.stats.firstGridMs !== null", timeout=60000)
            assert "4 kept faces stored in this browser for this generator could not be read" in \
                page.text_content("#notice")
            for text in ("abc", "-1", "4294967296", "", "1e3", "12.5"):
                page.fill("#seed-input", text)
                page.click("#show-seed")
                assert f"the seed box's \"{text}\" is not a page seed" in page.text_content("#notice"), text
                assert page.text_content("#picked-label") == "none yet"
            page.fill("#seed-input", "4294967295")
            page.click("#show-seed")
            page.wait_for_function("document.getElementById('picked-label').textContent === 'seed 4294967295'")
            assert "the seed box's" not in page.text_content("#notice")
            # generator.json with fields the page cannot use
            for i, (change, problem) in enumerate((
                    ({"latent_dim": "8"}, 'latent_dim is "8", not 1..4096'),
                    ({"image_size": 10 ** 9}, "image_size is 1000000000, not 8..512"),
                    ({"fid": {"fid": "low"}}, "fid is not an FID measurement"),
                    ({"latent_dim": 9}, "generator.onnx takes 8-d z; generator.json says 9"))):
                with open(os.path.join(web, "generator.json"), "w") as f:
                    json.dump({**info, **change}, f)
                stamp = time.time() + 10 * (i + 1)  # another Last-Modified each time: no 304 from the cache
                os.utime(os.path.join(web, "generator.json"), (stamp, stamp))
                page.goto(url)
                page.wait_for_function("facegan.error !== null", timeout=60000)
                assert problem in page.text_content("#status") and page.is_visible("#status")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
