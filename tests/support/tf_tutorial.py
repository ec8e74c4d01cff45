"""SavedModels as TensorFlow users write them, for tests, benchmarks and docs. Needs TensorFlow.

- :func:`tutorial_cnn`: the Keras CNN of TensorFlow's image classification tutorial (Rescaling,
  three Conv2D/MaxPooling2D blocks, Dense 128, Dense logits), saved with
  ``tf.saved_model.save(model, path)`` or ``model.export(path)`` by :func:`save_keras`.
- :func:`save_jpeg_model`: the same CNN behind a ``serving_default`` that takes JPEG bytes
  (``image_bytes``, DT_STRING), decodes and resizes in the graph, and returns scores, the label
  and a PNG thumbnail (``thumbnail_bytes``, so REST answers it as ``{"b64": ...}``).
- :func:`save_example_model`: a TF1-style SavedModel whose signatures parse serialized
  ``tf.Example``\\ s, as Estimator exports did: ``serving_default`` (classify),
  ``regress`` (regress) and ``predict`` (predict on a float tensor).
- :func:`warmup_record`: a PredictionLog record for ``assets.extra/tf_serving_warmup_requests``.

Test support (tests/support is on pytest's pythonpath); benchmarks/tensorflow_vs_onnx.py uses
it too. Nothing here is imported by the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def tutorial_cnn(height: int = 180, width: int = 180, num_classes: int = 5, *,
                 seed: int = 0) -> Any:
    """The tutorial's model (untrained: weights from ``seed``)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=(height, width, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes),
    ])


def save_keras(model: Any, path: Path, how: str = "saved_model") -> Path:
    """``how``: ``saved_model`` (tf.saved_model.save) or ``export`` (model.export)."""
    import tensorflow as tf

    if how == "saved_model":
        tf.saved_model.save(model, str(path))
    elif how == "export":
        model.export(str(path), verbose=False)
    else:
        raise ValueError(f"how must be saved_model or export, not {how!r}")
    return path


def input_alias(version_dir: Path, signature: str = "serving_default") -> str:
    """The single input alias of a signature. Keras names an unnamed input ``keras_tensor``,
    ``keras_tensor_7``, ... after the tensors made before it in the process, so ask."""
    from corolla.runtimes.tensorflow import read_saved_model, select_meta_graph

    mg = select_meta_graph(read_saved_model(version_dir), ("serve",), version_dir)
    (alias,) = mg.signature_def[signature].inputs
    return str(alias)


def save_jpeg_model(model: Any, path: Path, labels: Sequence[str] = FLOWERS) -> Path:
    import tensorflow as tf

    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    label_table = tf.constant(list(labels))

    class JpegClassifier(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes: Any) -> dict[str, Any]:
            def decode(b: Any) -> Any:
                img = tf.io.decode_jpeg(b, channels=3)
                return tf.image.resize(img, (height, width))

            images = tf.map_fn(decode, image_bytes,
                               fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
            scores = tf.nn.softmax(self.model(images))
            thumbs = tf.map_fn(
                lambda im: tf.io.encode_png(tf.cast(tf.image.resize(im, (4, 4)), tf.uint8)),
                images, fn_output_signature=tf.TensorSpec([], tf.string))
            return {"scores": scores,
                    "label": tf.gather(label_table, tf.argmax(scores, axis=1)),
                    "thumbnail_bytes": thumbs}

    module = JpegClassifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_example_model(path: Path, labels: Sequence[str] = ("cat", "dog", "bird")) -> Path:
    """A TF1 graph over serialized tf.Examples with feature ``x`` (2 floats)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    n = len(labels)
    weights = np.arange(2 * n, dtype=np.float32).reshape(2, n) / 4.0 - 0.5
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.io.parse_example(
            serialized, {"x": v1.io.FixedLenFeature([2], tf.float32)})
        x = v1.placeholder_with_default(features["x"], [None, 2], name="x")
        w = v1.get_variable("w", initializer=tf.constant(weights))
        b = v1.get_variable("b", initializer=tf.constant(np.linspace(-1, 1, n, dtype=np.float32)))
        logits = tf.matmul(x, w) + b
        scores = tf.nn.softmax(logits, name="scores")
        classes = tf.tile(tf.constant([list(labels)]), [tf.shape(x)[0], 1], name="classes")
        value = tf.reduce_sum(x * tf.constant([2.0, -1.0]), axis=1, name="value")
        info = v1.saved_model.utils.build_tensor_info
        sigs = {
            "serving_default": v1.saved_model.classification_signature_def(
                serialized, classes, scores),
            "regress": v1.saved_model.regression_signature_def(serialized, value),
            "predict": v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"x": info(x)}, outputs={"scores": info(scores)},
                method_name="tensorflow/serving/predict"),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=sigs)
            builder.save()
    return path


def example_model_reference(x: np.ndarray, labels: Sequence[str] = ("cat", "dog", "bird")
                            ) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`save_example_model`'s graph computes: (scores, regression values)."""
    n = len(labels)
    weights = np.arange(2 * n, dtype=np.float32).reshape(2, n) / 4.0 - 0.5
    logits = x.astype(np.float32) @ weights + np.linspace(-1, 1, n, dtype=np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), x[:, 0] * 2.0 - x[:, 1]


def float_example(x: Sequence[float]) -> bytes:
    """A serialized tf.Example with float feature ``x``."""
    from corolla.protos.gen.tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.extend(float(v) for v in x)
    return ex.SerializeToString()


def warmup_record(kind: str, *, inputs: dict[str, np.ndarray] | None = None,
                  signature_name: str = "", examples: Sequence[Sequence[float]] = ()) -> bytes:
    """One serialized PredictionLog: ``predict`` (with ``inputs``), ``classify`` or
    ``regress`` (with float ``examples`` of feature ``x``)."""
    from corolla.protocols.tensor_proto import from_numpy
    from corolla.protos.gen.tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    if kind == "predict":
        req = entry.predict_log.request
        req.model_spec.signature_name = signature_name
        for alias, value in (inputs or {}).items():
            from_numpy(value, out=req.inputs[alias])
    elif kind in ("classify", "regress"):
        req = (entry.classify_log.request if kind == "classify"
               else entry.regress_log.request)
        req.model_spec.signature_name = signature_name
        for x in examples:
            ex = req.input.example_list.examples.add()
            ex.features.feature["x"].float_list.value.extend(float(v) for v in x)
    else:
        raise ValueError(kind)
    return bytes(entry.SerializeToString())
