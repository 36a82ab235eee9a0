"""Serving: `docker run IMAGE serve`. A request's path, start to end:

gunicorn (gunicorn_conf.py) → app.py /invocations → codecs.decode_request → ModelArtifact.predict
→ codecs.encode_response → response; any RequestError → JSON error with its status.
"""
