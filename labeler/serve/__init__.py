"""Online labelling of single songs with Ray Serve: `POST /label` and `GET /healthz`.

One module per part: `options` (ServeConfig), `request` (the body -> a validated SongRequest, or a
4xx), `featuriser` (the song -> the Predictor's one-row batch) and `app` (the deployment, its
answers and the application builder; the endpoint's contract is app's docstring). The pieces
shared with the batch job come from labeler.bundle.info and labeler.inference.label_rows, never from the
batch driver. `labeler serve`'s flags are jobs/commands/serve.py; `serve run
labeler.serve:app_builder bundle=URI` reaches the same application without them.
"""

from labeler.serve.app import LabelService, app_builder, build_app, row_to_json, start, status_for_row
from labeler.serve.featuriser import SongFeaturiser
from labeler.serve.options import ServeConfig
from labeler.serve.request import RequestError, SongRequest, parse_request, song_from_fields

__all__ = ["LabelService", "RequestError", "ServeConfig", "SongFeaturiser", "SongRequest", "app_builder", "build_app",
           "parse_request", "row_to_json", "song_from_fields", "start", "status_for_row"]
