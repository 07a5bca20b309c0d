"""Face features with MediaPipe's FaceLandmarker (Tasks API, VIDEO mode): one row per frame.

Per frame: the 52 ARKit-style blendshape scores in the model's order (the first is "_neutral"), head pose from
the 4x4 facial transformation matrix, and optionally the 478 landmarks normalised to the face's box. Frames
without a face are zero rows with mask False. Of several faces the largest (landmark bounding-box area) is kept.

Head pose convention (MediaPipe's metric camera frame: x to the image's right, y up, z towards the viewer; the
matrix maps the canonical face model into it): R = Rz(roll) · Ry(yaw) · Rx(pitch), angles in degrees, 0 0 0 a
face looking along the camera axis, upright. pitch > 0: looking down; yaw > 0: turned towards the image's right
(the subject's left); roll > 0: tilted counter-clockwise in the image. tx, ty, tz: the face's position in cm
(tx > 0 right of the optical axis, ty > 0 above it, tz < 0 in front of the camera).

The model file comes from ``cmamba.assets`` (``cmamba models install``); nothing is downloaded here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmamba.assets import resolve_face_model
from cmamba.extractors.base import Extractor, FeatureSequence, Frames, InputSpec, register_extractor, shared_model
from cmamba.io import native_stderr_to

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mediapipe.tasks.python import vision

BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
POSE = ("pitch", "yaw", "roll", "tx", "ty", "tz")
LANDMARKS = tuple(f"lm{i}_{axis}" for i in range(478) for axis in "xyz")


MAX_FPS, MAX_SIDE = 60.0, 4096  # beyond these a setting only multiplies memory and time


@dataclass(frozen=True)
class FaceConfig:
    # 10 Hz resolves facial expressions (onsets last 100+ ms) at a third of the cost of 30 fps video.
    fps: float = 10.0
    max_side: int = 640  # decoding downscales larger frames before detection (the detector works at 128 px)
    landmarks: bool = False  # add the 478 (x, y, z) landmarks normalised to the face box
    model_path: str | None = None  # None: $CMAMBA_FACE_MODEL, else the installed pinned model
    max_faces: int = 4  # faces detected per frame; the largest is kept (several so the largest can be chosen)
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def __post_init__(self):
        # bounded: a clip's rows grow with fps, a decoded frame with max_side² (facial expressions need neither)
        if not 0 < self.fps <= MAX_FPS:
            raise ValueError(f"fps must lie in (0, {MAX_FPS}], got {self.fps}")
        if not 32 <= self.max_side <= MAX_SIDE:
            raise ValueError(f"max_side must lie in [32, {MAX_SIDE}] pixels, got {self.max_side}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {self.max_faces}")
        for field in ("min_detection_confidence", "min_presence_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must lie in [0, 1], got {getattr(self, field)}")


def pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(pitch, yaw, roll) in degrees and (tx, ty, tz) in cm from a 4x4 facial transformation matrix (module doc)."""
    R = matrix[:3, :3]
    pitch = np.arctan2(R[2, 1], R[2, 2])
    yaw = np.arcsin(np.clip(-R[2, 0], -1.0, 1.0))
    roll = np.arctan2(R[1, 0], R[0, 0])
    return np.concatenate([np.degrees([pitch, yaw, roll]), matrix[:3, 3]])


@register_extractor
class MediaPipeFace(Extractor[Frames]):
    name = "mediapipe-face"
    version = "1"
    modality = "video"
    input_type = Frames
    config_type = FaceConfig

    @property
    def feature_names(self) -> tuple[str, ...]:
        return (*BLENDSHAPES, *POSE, *(LANDMARKS if self.config.landmarks else ()))

    def input_spec(self) -> InputSpec:
        return InputSpec("frames", rate=self.config.fps, max_side=self.config.max_side)

    def frame_rate(self) -> float:
        return self.config.fps

    def model_files(self) -> dict[str, Path]:
        return {"face_model": resolve_face_model(self.config.model_path)}

    def absent_reason(self, seq: FeatureSequence) -> str | None:
        if seq.info.get("face_frames", int(seq.mask.sum())) == 0:
            return f"no face found in any of the {seq.length} sampled frames"
        return None

    def extract(self, data: Frames) -> FeatureSequence:
        """data: uint8 RGB frames with strictly increasing timestamps (arrays or a stream). One row per frame."""
        import mediapipe as mp  # imported on first use: it costs 0.5 s (matplotlib) for every importer of cmamba
        from mediapipe.tasks.python import vision

        if data.stream is None:  # arrays: check the shapes up front
            images, stamps = np.asarray(data.images), np.asarray(data.timestamps, dtype=np.float64)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(
                    f"{self.name}: expected uint8 RGB frames (T, H, W, 3), got {images.dtype} {images.shape}"
                )
            if stamps.shape != images.shape[:1]:
                raise ValueError(f"{self.name}: {len(images)} frames but timestamps of shape {stamps.shape}")
        rows, times, mask = [], [], []
        multiple = 0
        # A fresh landmarker per clip: VIDEO mode tracks the face (the last landmarks give the next crop), and
        # that state carries into the next clip (measured: reusing one landmarker with a timestamp offset changed
        # a clip's blendshapes by up to 0.9 with max_faces=1, depending on the clip before). Creating one from
        # the bytes held per process costs ~20-35 ms, about 6% of a 4 s clip at 10 fps, and makes each clip's
        # result independent of what ran before. It also makes extract() thread-safe without a lock: threads
        # share only the immutable model bytes. Frames are consumed one at a time (a stream is never stacked).
        with native_stderr_to(log):  # MediaPipe's set-up notes, 3-4 lines per landmarker, are not for the user
            landmarker = vision.FaceLandmarker.create_from_options(self._options())
        with landmarker:
            last_ms = -1
            for seconds, frame in data:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                    raise ValueError(
                        f"{self.name}: expected uint8 RGB frames (H, W, 3), got {frame.dtype} {frame.shape}"
                    )
                if times and seconds <= times[-1]:
                    raise ValueError(f"{self.name}: timestamps must increase strictly (VIDEO mode tracks through time)")
                times.append(float(seconds))
                ms = max(round(seconds * 1000), last_ms + 1)  # VIDEO mode needs strictly increasing integer ms
                last_ms = ms
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
                result = landmarker.detect_for_video(image, ms)
                if not result.face_landmarks:
                    rows.append(None)
                    mask.append(False)
                    continue
                multiple += int(len(result.face_landmarks) > 1)
                mask.append(True)
                rows.append(self._row(result))
        T = len(times)
        values = np.zeros((T, self.feature_dim), np.float32)
        for t, row in enumerate(rows):
            if row is not None:
                values[t] = row
        timestamps, mask = np.asarray(times, dtype=np.float64), np.asarray(mask, dtype=bool)
        info = {"face_frames": int(mask.sum()), "frames": T, "multiple_faces_frames": multiple}
        return FeatureSequence(values, timestamps, mask, self.feature_names, info)

    def _options(self) -> vision.FaceLandmarkerOptions:
        from mediapipe.tasks.python import BaseOptions, vision

        cfg = self.config
        path = resolve_face_model(cfg.model_path)
        # The bytes are read once per process; they must outlive every landmarker made from them.
        model = shared_model(("mediapipe-face", str(path)), path.read_bytes)
        return vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=model),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=cfg.max_faces,
            min_face_detection_confidence=cfg.min_detection_confidence,
            min_face_presence_confidence=cfg.min_presence_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )

    def _row(self, result: vision.FaceLandmarkerResult) -> np.ndarray:
        """The features (F,) of the largest face in one frame's result."""
        boxes = []
        for face in result.face_landmarks:
            xy = np.array([(p.x, p.y) for p in face])
            boxes.append((xy.min(0), xy.max(0)))
        k = int(np.argmax([np.prod(hi - lo) for lo, hi in boxes]))
        categories = result.face_blendshapes[k]
        names = tuple(c.category_name for c in categories)
        if names != BLENDSHAPES:  # the column names are only right if the model's order is the documented one
            raise RuntimeError(f"{self.name}: the face model's blendshapes differ from BLENDSHAPES: {names}")
        parts = [[c.score for c in categories], pose_from_matrix(result.facial_transformation_matrixes[k])]
        if self.config.landmarks:
            (x0, y0), (x1, y1) = boxes[k]
            width, height = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
            points = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[k]])
            # x, y relative to the landmark box; z (image-width units, like x) scaled by the box width
            parts.append(((points - (x0, y0, 0.0)) / (width, height, width)).reshape(-1))
        return np.concatenate(parts)
