"""FeatureExtractor as the first step of a scikit-learn Pipeline, tuned with GridSearchCV (offline).

    python examples/pipeline_features.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from xrayest import FeatureExtractor, make_synthetic_xrays  # noqa: E402

X, y = make_synthetic_xrays(240, 64, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
# Random (untrained) VGG16 features at 64 px: no download needed. Use weights="imagenet" or a file for real work.
pipe = make_pipeline(FeatureExtractor("vgg16", weights=None, image_size=64, pooling="max", random_state=0),
                     StandardScaler(), LogisticRegression(max_iter=2000))
grid = GridSearchCV(pipe, {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=3)
grid.fit(X_train, y_train)  # the backbone runs once per image; the 9 fits reuse cached features
print("best C:", grid.best_params_, f"cv accuracy {grid.best_score_:.3f}")
print(f"test accuracy {grid.score(X_test, y_test):.3f}")
