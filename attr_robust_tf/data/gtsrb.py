"""GTSRB, official *final* protocol (docs/datasets.md §3): Final_Training (39,209 images in 43 class folders, labels from
the folder) and Final_Test with `GT-final_test.csv` (12,630, in file-name order), as zips or extracted trees."""
import csv
import io
import os
import re

import numpy as np

from attr_robust_tf.data import archives, discovery, download
from attr_robust_tf.data import images as images_lib
from attr_robust_tf.data import verify as verify_lib

NUM_CLASSES = 43
HEADER = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
TRAIN_PREFIX = "GTSRB/Final_Training/Images/"
TEST_PREFIX = "GTSRB/Final_Test/Images/"
GT_CSV = "GT-final_test.csv"
VALIDATION_FRACTION = 0.1  # of the tracks of each class (docs/datasets.md §3.3: split by track, never by image)
_TRAIN_FILE = re.compile(r"^(\d{5})_(\d{5})\.ppm$")
_TEST_FILE = re.compile(r"^\d{5}\.ppm$")

LAYOUT = """\
  <root>/GTSRB_Final_Training_Images.zip   GTSRB/Final_Training/Images/000CC/GT-000CC.csv + TTTTT_FFFFF.ppm,
                                           CC = 00..42 (43 class folders)
  <root>/GTSRB_Final_Test_Images.zip       GTSRB/Final_Test/Images/00000.ppm .. 12629.ppm
  <root>/GTSRB_Final_Test_GT.zip           GT-final_test.csv (with ClassId)
or the same, extracted into <root>:
  <root>/GTSRB/Final_Training/Images/00000/GT-00000.csv, 00000_00000.ppm, ...
  <root>/GTSRB/Final_Test/Images/00000.ppm, ...
  <root>/GT-final_test.csv"""

CLASS_NAMES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing", "Beware of ice/snow",
    "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead", "Turn left ahead",
    "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)


def parse_csv(data, where, *, expect_class=None):
    """Rows of a GTSRB annotation CSV (`;`-separated, the official header) as dicts of ints plus `Filename`.

    ROI coordinates are inclusive (docs/datasets.md §3.2) and must lie inside the Width x Height image.
    """
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=";", skipinitialspace=True))
    header = [h.strip() for h in rows[0]] if rows else []
    if header and header[-1] == "":
        header = header[:-1]
    if tuple(header) != HEADER:
        hint = ""
        if tuple(header) == HEADER[:-1]:
            hint = (" This is the unlabelled GT-final_test.test.csv of the image zip; the labels are in "
                    "GT-final_test.csv of GTSRB_Final_Test_GT.zip.")
        raise ValueError(f"{where} must start with the header {';'.join(HEADER)}. Received: "
                         f"{';'.join(rows[0]) if rows else '(empty file)'}.{hint}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) == len(HEADER) + 1 and row[-1] == "":
            row = row[:-1]
        if len(row) != len(HEADER):
            raise ValueError(f"{where}, row {line} must have {len(HEADER)} `;`-separated columns. Received: "
                             f"{len(row)} columns: {';'.join(row)!r}.")
        try:
            rec = {"Filename": row[0].strip(), **{k: int(v) for k, v in zip(HEADER[1:], row[1:])}}
        except ValueError:
            raise ValueError(f"{where}, row {line} must hold integers after the file name. Received: "
                             f"{';'.join(row)!r}.") from None
        w, h, x1, y1, x2, y2 = (rec[k] for k in HEADER[1:7])
        if not (0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h):
            raise ValueError(f"{where}, row {line} must have an ROI inside the {w}x{h} image (inclusive "
                             f"coordinates). Received: Roi=({x1}, {y1}, {x2}, {y2}).")
        if not 0 <= rec["ClassId"] < NUM_CLASSES:
            raise ValueError(f"{where}, row {line} must have ClassId in 0..{NUM_CLASSES - 1}. Received: "
                             f"ClassId={rec['ClassId']}.")
        if expect_class is not None and rec["ClassId"] != expect_class:
            raise ValueError(f"{where}, row {line} must have ClassId={expect_class} (its class folder). Received: "
                             f"ClassId={rec['ClassId']}.")
        rec["line"] = line
        out.append(rec)
    return out


class Source:
    """The GTSRB files found in one folder: per role, a tree (zip or extracted folder) and its path."""

    def __init__(self, folder, part, found, verify, cache_dir):
        self.folder, self.part = folder, part
        specs = verify_lib.FILES["gtsrb"]
        # Zips are checked before they are opened, so a corrupt archive reports its checksum, not a parse error.
        md5s = {role: verify_lib.check_file(path, specs[role], verify=verify, cache_dir=cache_dir)
                for role, (kind, path, _) in found.items() if kind == "zip"}
        self.trees = {role: (_open(kind, path, under), path) for role, (kind, path, under) in found.items()}
        self.key = sorted([role, md5s[role] if role in md5s else tree.digest()]
                          for role, (tree, _) in self.trees.items())

    def describe(self):
        return self.folder


def _find(folder, part):
    """(found, missing) for `part` in `folder`: found maps role -> (kind, path, under); it is None when the
    folder holds no GTSRB file at all."""
    spec = verify_lib.FILES["gtsrb"]
    found, missing = {}, []
    roles = ("train",) if part == "train" else ("test_images", "test_gt")
    any_file = any(os.path.exists(os.path.join(folder, s.filename)) for s in spec.values()) or any(
        os.path.exists(os.path.join(folder, p)) for p in (TRAIN_PREFIX, TEST_PREFIX, GT_CSV))
    if not any_file:
        return None, []
    for role in roles:
        zpath = os.path.join(folder, spec[role].filename)
        if os.path.isfile(zpath):
            found[role] = ("zip", zpath, None)
            continue
        if role == "test_gt":
            for sub in ("", "GTSRB", TEST_PREFIX):
                csv_path = os.path.join(folder, sub, GT_CSV)
                if os.path.isfile(csv_path):
                    found[role] = ("csv", csv_path, None)
                    break
        else:
            prefix = TRAIN_PREFIX if role == "train" else TEST_PREFIX
            if os.path.isdir(os.path.join(folder, prefix)):
                found[role] = ("dir", folder, prefix)
        if role not in found:
            missing.append(spec[role].filename + (" (or its extracted tree)" if role != "test_gt" else
                                                  f" (or an extracted {GT_CSV})"))
    return found, missing


def _open(kind, path, under):
    if kind == "zip":
        return archives.ZipTree(path)
    if kind == "csv":
        return archives.DirTree(os.path.dirname(path), only=[GT_CSV])
    return archives.DirTree(path, under=under)


def locate(roots, part, *, download_ok=False, verify=True, cache_dir=None):
    """The GTSRB source of `part` ('train' or 'test'), searched in discovery order."""
    for folder in roots.candidates():
        found, missing = _find(folder, part)
        if found is None:
            continue
        if missing and download_ok:
            break  # fetch the missing files (into data_dir or the cache folder)
        if missing:
            raise FileNotFoundError(
                f"{folder} holds GTSRB files but not all of the {part} part: missing {', '.join(missing)}. "
                f"Expected:\n{LAYOUT}\nOfficial source: {verify_lib.GTSRB_URL}")
        return _source(folder, part, found, verify, cache_dir)
    if download_ok:
        target = roots.download_target
        roles = ("train",) if part == "train" else ("test_images", "test_gt")
        download.fetch([verify_lib.FILES["gtsrb"][r] for r in roles], target, verify=verify)
        found, _ = _find(target, part)
        return _source(target, part, found, verify, cache_dir)
    raise discovery.not_found("gtsrb", "GTSRB", roots.looked, LAYOUT, verify_lib.GTSRB_URL, roots.download_dir)


def _source(folder, part, found, verify, cache_dir):
    return Source(folder, part, found, verify, cache_dir)


def _train_entries(tree, where):
    classes = {d[len(TRAIN_PREFIX):] for d in tree.dirs if d.startswith(TRAIN_PREFIX) and d.count("/") == 3}
    expected = [f"{c:05d}" for c in range(NUM_CLASSES)]
    missing = [c for c in expected if c not in classes]
    extra = sorted(c for c in classes if c not in expected)
    if missing or extra:
        detail = f"missing class folders {', '.join(missing)}" if missing else ""
        detail += ("; " if detail else "") + (f"unexpected folders {', '.join(extra)}" if extra else "")
        raise ValueError(f"{where} must hold the {NUM_CLASSES} class folders {TRAIN_PREFIX}00000 .. "
                         f"{TRAIN_PREFIX}00042, each with GT-000CC.csv. Received: {detail}. Expected:\n{LAYOUT}")
    entries = []
    for label, cc in enumerate(expected):
        csv_name = f"{TRAIN_PREFIX}{cc}/GT-{cc}.csv"
        if csv_name not in tree.names:
            raise ValueError(f"{tree.where(csv_name)} is missing: every class folder needs its annotation CSV. "
                             f"Expected:\n{LAYOUT}")
        for rec in parse_csv(tree.read(csv_name), tree.where(csv_name), expect_class=label):
            match = _TRAIN_FILE.match(rec["Filename"])
            name = f"{TRAIN_PREFIX}{cc}/{rec['Filename']}"
            if not match:
                raise ValueError(f"{tree.where(csv_name)}, row {rec['line']} must name a TTTTT_FFFFF.ppm file. "
                                 f"Received: {rec['Filename']!r}.")
            if name not in tree.names:
                raise ValueError(f"{tree.where(name)} is missing: listed in row {rec['line']} of {csv_name}.")
            entries.append(dict(rec, name=name, label=label, track=label * 100000 + int(match.group(1)),
                                where=f"{tree.where(name)} ({csv_name}, row {rec['line']})"))
    return entries


def _test_entries(images_tree, gt_tree):
    rows = parse_csv(gt_tree.read(GT_CSV), gt_tree.where(GT_CSV))
    listed = {r["Filename"] for r in rows}
    present = {n[len(TEST_PREFIX):] for n in images_tree.names
               if n.startswith(TEST_PREFIX) and _TEST_FILE.match(n[len(TEST_PREFIX):])}
    if listed != present or len(listed) != len(rows):
        lost, unlabelled = sorted(listed - present), sorted(present - listed)
        raise ValueError(
            f"{gt_tree.where(GT_CSV)} must label exactly the test images of {images_tree.path}/{TEST_PREFIX}. "
            f"Received: {len(rows):,} rows for {len(present):,} images; listed but missing: {lost[:5]}"
            f"{' ...' if len(lost) > 5 else ''}; present but unlabelled: {unlabelled[:5]}"
            f"{' ...' if len(unlabelled) > 5 else ''}; duplicate rows: {len(rows) - len(listed)}.")
    rows.sort(key=lambda r: r["Filename"])  # docs/datasets.md §3.3: file-name order
    return [dict(r, name=TEST_PREFIX + r["Filename"], label=r["ClassId"], track=-1,
                 where=f"{images_tree.where(TEST_PREFIX + r['Filename'])} ({GT_CSV}, row {r['line']})")
            for r in rows]


def _decode_one(entry, data, *, size, resample, crop_roi):
    box = None
    if crop_roi:  # inclusive ROI -> PIL's exclusive right/lower edge
        box = (entry["Roi.X1"], entry["Roi.Y1"], entry["Roi.X2"] + 1, entry["Roi.Y2"] + 1)
    return images_lib.decode(data, entry["where"], box=box, size=size, resample=resample,
                             expected_size=(entry["Width"], entry["Height"]))


def decode(source, part, settings):
    """{part: {"images": uint8 (N, h, w, 3), "labels": int32 (N,), "tracks": int64 (N,)}} in official order."""
    if part == "train":
        tree = source.trees["train"][0]
        entries = _train_entries(tree, source.trees["train"][1])
    else:
        tree = source.trees["test_images"][0]
        entries = _test_entries(tree, source.trees["test_gt"][0])
    by_name = {e["name"]: e for e in entries}
    size, resample, crop = tuple(settings["image_size"]), settings["resample"], settings["crop_roi"]
    decoded = tree.decode([e["name"] for e in entries],
                          lambda name, data: _decode_one(by_name[name], data, size=size, resample=resample,
                                                         crop_roi=crop))
    images = np.stack(decoded) if decoded else np.zeros((0, *size, 3), np.uint8)
    return {part: {"images": images, "labels": np.asarray([e["label"] for e in entries], np.int32),
                   "tracks": np.asarray([e["track"] for e in entries], np.int64)}}


def validation_mask(labels, tracks, fraction=VALIDATION_FRACTION):
    """True for images of held-out tracks: per class, the last max(1, round(fraction·T)) of its T tracks (by
    track number); a class with a single track keeps it for training."""
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        in_class = labels == c
        class_tracks = np.unique(tracks[in_class])
        n_val = max(1, int(round(fraction * len(class_tracks)))) if len(class_tracks) > 1 else 0
        if n_val:
            mask |= in_class & np.isin(tracks, class_tracks[-n_val:])
    return mask


def select(split, arrays):
    if split in ("train_full", "test"):
        return slice(None)
    mask = validation_mask(arrays["labels"], arrays["tracks"])
    return np.flatnonzero(mask if split == "validation" else ~mask)
