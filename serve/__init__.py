"""Serving: `docker run IMAGE serve`. A request's path, start to end:

gunicorn (gunicorn_conf.py) → app.py /invocations (reads the body) → ServedModel.invoke (invocation.py),
for optml's models builtin.py: codecs.decode_request → ModelArtifact.predict → outputs.shape_result
→ codecs.encode_response → response; any RequestError → JSON error with its status.
"""
