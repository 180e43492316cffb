"""Fixtures of the S3 model-store rules: requests signed by botocore, model files from traffic_models."""

from __future__ import annotations

import random

from inspector.lab.craft import Capture
from inspector.lab.rulecaps.fixture import OUTSIDE, PIPELINE_HOST, S3_ENDPOINT, Fixture
from inspector.lab.traffic_http import HttpSession
from inspector.lab.traffic_models import (
    SSTI_CHAT_TEMPLATE,
    benign_pickle,
    gguf_bytes,
    malicious_pickle,
    safetensors_bytes,
    torch_zip,
)
from inspector.lab.traffic_s3 import S3Identity, create_multipart_answer, s3_error, s3_object, s3_ok, s3_request

PIPELINE = S3Identity(access_key="AKIAPIPELINE0EXAMPLE")
DEVELOPER = S3Identity(access_key="AKIADEVELOPER0EXAMPL")
PROD_BUCKET = "ml-models-prod"
APPROVED = {"APPROVED_BUCKETS": [PROD_BUCKET]}


def _session(cap: Capture, rng: random.Random, client: str = OUTSIDE) -> HttpSession:
    return HttpSession(cap, rng, client, S3_ENDPOINT, 80)


def _pull_torch(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A torch.save-style zip pulled from the production bucket; its data.pkl runs os.system (attack)."""
    model = torch_zip(malicious_pickle() if attack else benign_pickle())
    session = _session(cap, rng, PIPELINE_HOST)
    session.exchange(s3_request("GET", PROD_BUCKET, "resnet/v3/model.pt", identity=PIPELINE), s3_object(model))
    session.close()


def _pull_pickle(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A pickled model pulled from a scratch bucket (attack) or the approved bucket; the near miss
    also pulls safetensors from the scratch bucket (not a pickle format)."""
    session = _session(cap, rng, PIPELINE_HOST)
    bucket = "scratch-share" if attack else PROD_BUCKET
    session.exchange(s3_request("GET", bucket, "churn/model.pkl", identity=PIPELINE), s3_object(benign_pickle()))
    if not attack:
        session.exchange(s3_request("GET", "scratch-share", "churn/model.safetensors", identity=PIPELINE),
                         s3_object(safetensors_bytes()))
    session.close()


def _upload(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A safetensors PutObject and a multipart model upload, by a developer key (attack) or the
    pipeline key; the near miss also has the developer upload a CSV (not a model)."""
    identity = DEVELOPER if attack else PIPELINE
    session = _session(cap, rng, OUTSIDE if attack else PIPELINE_HOST)
    session.exchange(s3_request("PUT", PROD_BUCKET, "fraud/v7/model.safetensors", body=safetensors_bytes(),
                                identity=identity), s3_ok(seed="put1"))
    session.exchange(s3_request("POST", PROD_BUCKET, "llm/v2/pytorch_model.bin", query="uploads",
                                identity=identity),
                     create_multipart_answer(PROD_BUCKET, "llm/v2/pytorch_model.bin", "2~lab-upload-0001"))
    if not attack:
        developer = _session(cap, rng, OUTSIDE)
        developer.exchange(s3_request("PUT", PROD_BUCKET, "reports/eval.csv", body=b"model,auc\nfraud-v7,0.91\n",
                                      identity=DEVELOPER), s3_ok(seed="put2"))
        developer.close()
    session.close()


def _anonymous(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A model object from a public bucket and an index from the model bucket, unsigned (attack) or
    signed; the near miss adds an unsigned fetch of a web page from a site bucket."""
    identity = None if attack else DEVELOPER
    session = _session(cap, rng)
    session.exchange(s3_request("GET", "public-demo", "weights/model.safetensors", identity=identity),
                     s3_object(safetensors_bytes()))
    session.exchange(s3_request("GET", PROD_BUCKET, "index.json", identity=identity),
                     s3_error("AccessDenied", "Access Denied", 403) if attack else s3_object(b'{"models": []}'))
    if not attack:
        session.exchange(s3_request("GET", "www-example-site", "index.html", identity=None),
                         s3_object(b"<html></html>", content_type="text/html"))
    session.close()


def _disguised(cap: Capture, rng: random.Random, attack: bool) -> None:
    """model.safetensors whose bytes are a pickle (attack) or real safetensors."""
    session = _session(cap, rng, PIPELINE_HOST)
    session.exchange(s3_request("GET", PROD_BUCKET, "bert/model.safetensors", identity=PIPELINE),
                     s3_object(benign_pickle() if attack else safetensors_bytes()))
    session.close()


def _gguf(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, PIPELINE_HOST)
    model = gguf_bytes(SSTI_CHAT_TEMPLATE) if attack else gguf_bytes()
    session.exchange(s3_request("GET", PROD_BUCKET, "llm/tiny-llama.Q4_K_M.gguf", identity=PIPELINE),
                     s3_object(model))
    session.close()


FIXTURES: dict[str, Fixture] = {
    "s3_malicious_pickle_model": Fixture(
        sid=3200001, positive=lambda c, r: _pull_torch(c, r, True), negative=lambda c, r: _pull_torch(c, r, False),
        parsed=("s3", 1, 1),
        notes="GetObject of a torch-style zip whose data.pkl is pickle.dumps of an object reducing to os.system "
              "(never loaded); the near miss's data.pkl is a plain OrderedDict state."),
    "s3_pickle_model_unapproved_bucket": Fixture(
        sid=3200002, positive=lambda c, r: _pull_pickle(c, r, True), negative=lambda c, r: _pull_pickle(c, r, False),
        parsed=("s3", 1, 2), config=APPROVED,
        notes="A benign pickle model pulled from scratch-share (APPROVED_BUCKETS: ml-models-prod); the near miss "
              "pulls it from ml-models-prod and pulls safetensors from scratch-share."),
    "s3_model_upload_outside_pipeline": Fixture(
        sid=3200003, positive=lambda c, r: _upload(c, r, True), negative=lambda c, r: _upload(c, r, False),
        parsed=("s3", 2, 3), positive_count=2, config={"PIPELINE_ACCESS_KEYS": [PIPELINE.access_key]},
        notes="PutObject of model.safetensors and CreateMultipartUpload of pytorch_model.bin signed with a "
              "developer key; the near miss signs them with the pipeline key, and the developer uploads a CSV."),
    "s3_anonymous_model_access": Fixture(
        sid=3200004, positive=lambda c, r: _anonymous(c, r, True), negative=lambda c, r: _anonymous(c, r, False),
        parsed=("s3", 2, 3), positive_count=2, config=APPROVED,
        notes="Unsigned GETs of a safetensors model in a public bucket and of an object in the model bucket; the "
              "near miss signs both and fetches a web page unsigned from a site bucket."),
    "s3_model_format_disguised": Fixture(
        sid=3200005, positive=lambda c, r: _disguised(c, r, True), negative=lambda c, r: _disguised(c, r, False),
        parsed=("s3", 1, 1),
        notes="model.safetensors whose bytes are a pickle; the near miss is a real safetensors file."),
    "s3_gguf_template_injection": Fixture(
        sid=3200006, positive=lambda c, r: _gguf(c, r, True), negative=lambda c, r: _gguf(c, r, False),
        parsed=("s3", 1, 1),
        notes="A GGUF whose tokenizer.chat_template walks __class__.__mro__ to os.popen; the near miss carries a "
              "plain Llama-style template."),
}
