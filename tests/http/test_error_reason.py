"""Label Studio shows annotators only the status line of a failed /predict: it must say why."""

import http.client
import json

from tests.support.fake_ls import ls_env


def test_status_line_carries_the_message_and_fix(start_backend, fake_ls):
    backend = start_backend({"SAM_ENGINE": "grabcut", **ls_env(fake_ls)})
    body = {
        "tasks": [{"id": 1, "data": {"image": "/data/upload/1/gone.png"}}],
        "label_config": '<View><Image name="image" value="$image"/>'
        '<BrushLabels name="b" toName="image"><Label value="A"/></BrushLabels>'
        '<KeyPointLabels name="k" toName="image" smart="true"><Label value="A"/></KeyPointLabels></View>',
        "params": {
            "context": {
                "result": [
                    {
                        "type": "keypointlabels",
                        "from_name": "k",
                        "to_name": "image",
                        "original_width": 64,
                        "original_height": 48,
                        "value": {"x": 50, "y": 50, "keypointlabels": ["A"]},
                    }
                ]
            }
        },
    }
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=60)
    conn.request("POST", "/predict", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    assert response.status == 424
    assert "gone.png" in response.reason and "404" in response.reason, response.reason
    assert payload["message"] in response.reason and payload["fix"] in response.reason
