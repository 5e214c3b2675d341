"""Deployment: ``reidx export`` writes a checkpoint's embedding path as one ONNX graph (:mod:`.onnx`), which
``embed``, ``search`` (``--model-file``) and other runtimes run; :mod:`.runtime` runs it with onnxruntime.
Importing this package imports neither torch's exporter nor onnxruntime until they are used."""
