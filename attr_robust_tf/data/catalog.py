"""What every dataset is: class names, default image shape, splits and their sizes (docs/datasets.md §1–§5)."""
import dataclasses

from attr_robust_tf.data import flowers, gtsrb
from attr_robust_tf.data import verify as verify_lib

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# Names in label order, as the TFDS `oxford_flowers102` builder lists them.
FLOWERS102_CLASSES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya",
    "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily",
    "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium",
    "orange dahlia", "pink-yellow dahlia?", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower",
    "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower",
    "lotus", "toad lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset.

    Args:
        name: the name `load` takes.
        title: the usual name.
        class_names: names in label order.
        num_classes: `len(class_names)`.
        image_shape: (H, W, C) of the images `load` returns by default.
        splits: split name -> number of images in the official data (None where it depends on the files:
            GTSRB's track-based train/validation).
        part_of: split name -> the decoded file set it selects from (splits of one part share one decode).
        homepage: where the official files are published.
        files: the official file names.
    """

    name: str
    title: str
    class_names: tuple
    num_classes: int
    image_shape: tuple
    splits: dict
    part_of: dict
    homepage: str
    files: tuple


def _info(name, title, classes, shape, splits, homepage, roles=None):
    files = verify_lib.FILES[name]
    names = tuple(files[r].filename for r in (roles or files))
    return DatasetInfo(name, title, tuple(classes), len(classes), shape,
                       {k: v[0] for k, v in splits.items()}, {k: v[1] for k, v in splits.items()}, homepage, names)


# docs/datasets.md §1.7: validation = official training images 0–4,999, train = 5,000–59,999.
_MNIST_SPLITS = {"train": (55000, "train"), "validation": (5000, "train"), "train_full": (60000, "train"),
                 "test": (10000, "test")}
_IDX_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
_FLOWER17_SPLITS = {"train": (1224, "all"), "test": (136, "all"), "rar_train": (1224, "all"),
                    "rar_test": (136, "all"), "all": (1360, "all")}
for _k in (1, 2, 3):  # docs/datasets.md §4.2: 40 / 20 / 20 per class
    _FLOWER17_SPLITS.update({f"official{_k}_train": (680, "all"), f"official{_k}_validation": (340, "all"),
                             f"official{_k}_test": (340, "all")})

DATASETS = {
    "mnist": _info("mnist", "MNIST", [str(d) for d in range(10)], (28, 28, 1), _MNIST_SPLITS,
                   "http://yann.lecun.com/exdb/mnist/", _IDX_ROLES),
    "fashion_mnist": _info("fashion_mnist", "Fashion-MNIST", FASHION_MNIST_CLASSES, (28, 28, 1), _MNIST_SPLITS,
                           verify_lib.FASHION_MNIST_URL),
    "gtsrb": _info("gtsrb", "GTSRB (final protocol)", gtsrb.CLASS_NAMES, (32, 32, 3),
                   {"train": (None, "train"), "validation": (None, "train"), "train_full": (39209, "train"),
                    "test": (12630, "test")}, verify_lib.GTSRB_URL),
    "flower17": _info("flower17", "Oxford Flower-17", flowers.FLOWER17_CLASSES, (128, 128, 3), _FLOWER17_SPLITS,
                      verify_lib.FLOWER17_URL),
    "flowers102": _info("flowers102", "Oxford Flowers-102", FLOWERS102_CLASSES, (128, 128, 3),
                        {"train": (1020, "all"), "validation": (1020, "all"), "test": (6149, "all"),
                         "all": (8189, "all")}, verify_lib.FLOWERS102_URL),
}
NAMES = tuple(DATASETS)
