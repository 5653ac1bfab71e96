"""``avstream report``: an HTML page and PNG figures of a finished run, made from its JSONL output.

``reader`` parses the lines (results, events and, where present, ``status`` messages), ``analysis``
derives what the report shows (alert intervals, sequence gaps, latency figures, top highlights),
``figures`` draws with matplotlib, ``thumbnails`` decodes frames with PyAV, ``page`` writes the HTML.
"""
