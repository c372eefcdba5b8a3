"""The emergency-broadcast benchmark (``budbringer bench``), kept out of the test suite.

``synth`` makes a deterministic municipality, ``sinks`` runs local FCM-, Twilio- and
SMTP-like servers in processes of their own, ``ceiling`` sends the same traffic
straight to them with nothing else, and ``run`` orchestrates a run and reports it.
"""
