"""AlexNet as in Gluon's model zoo (MXNet 1.9), the "one weird trick"
variant (Krizhevsky, 2014), with Gluon's attribute names, prefixes and
layer order: five convolutions (relu) with three 3x3/2 max pools, then two
Dense(4096, relu) with Dropout, and ``output`` = Dense(classes).  The
flattened features are 256 x 6 x 6 for a 224x224 input (other sizes change
the first Dense's input size; the smallest input is 63x63).  Input
``(N, 3, H, W)``, output ``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["AlexNet", "alexnet"]


class AlexNet(HybridBlock):
    """AlexNet.

    Parameters
    ----------
    classes : int, default 1000
    """

    def __init__(self, classes=1000, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                self.features.add(
                    nn.Conv2D(64, kernel_size=11, strides=4, padding=2,
                              activation="relu"),
                    nn.MaxPool2D(pool_size=3, strides=2),
                    nn.Conv2D(192, kernel_size=5, padding=2,
                              activation="relu"),
                    nn.MaxPool2D(pool_size=3, strides=2),
                    nn.Conv2D(384, kernel_size=3, padding=1,
                              activation="relu"),
                    nn.Conv2D(256, kernel_size=3, padding=1,
                              activation="relu"),
                    nn.Conv2D(256, kernel_size=3, padding=1,
                              activation="relu"),
                    nn.MaxPool2D(pool_size=3, strides=2),
                    nn.Flatten(),
                    nn.Dense(4096, activation="relu"),
                    nn.Dropout(0.5),
                    nn.Dense(4096, activation="relu"),
                    nn.Dropout(0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def alexnet(pretrained=False, ctx=None, root=None, **kwargs):
    """AlexNet.

    Parameters
    ----------
    pretrained : bool, default False
        Load ``alexnet``'s file from ``root`` (never downloaded; see
        :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``prefix``, ``params``.
    """
    net = AlexNet(**kwargs)
    if pretrained:
        load_pretrained(net, "alexnet", root)
    return net
