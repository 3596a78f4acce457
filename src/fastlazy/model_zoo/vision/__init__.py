"""The vision networks of Gluon's model zoo (MXNet 1.9), compiled.

Build one by name with :func:`get_model` (``get_model('resnet18_v1')``) or
by its function (``resnet18_v1()``).  The definitions, class names,
attribute names (``features``, ``output``), prefixes and layer order are
Gluon's, so parameter names (``resnetv10_stage1_conv0_weight``) and
structural keys (``features.4.0.body.0.weight``) are the ones in MXNet's
files, and ``net.load_parameters('resnet18_v1.params')`` loads a file
written by MXNet's ``net.save_parameters`` (or MXNet's model store).

Inputs are NCHW float32 images; the pretrained weights expect 224x224
(299x299 for Inception v3) RGB in [0, 1] normalized with mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).  ResNet, MobileNet,
VGG and AlexNet take other sizes too (their classifier follows a global
pool or a deferred Dense); SqueezeNet, DenseNet and Inception end in a
fixed-size average pool.
"""

from .alexnet import *       # noqa: F401,F403
from .densenet import *      # noqa: F401,F403
from .inception import *     # noqa: F401,F403
from .mobilenet import *     # noqa: F401,F403
from .resnet import *        # noqa: F401,F403
from .squeezenet import *    # noqa: F401,F403
from .vgg import *           # noqa: F401,F403

#: model name (as in Gluon's get_model) -> constructor
_models = {
    "resnet18_v1": resnet18_v1,
    "resnet34_v1": resnet34_v1,
    "resnet50_v1": resnet50_v1,
    "resnet101_v1": resnet101_v1,
    "resnet152_v1": resnet152_v1,
    "resnet18_v2": resnet18_v2,
    "resnet34_v2": resnet34_v2,
    "resnet50_v2": resnet50_v2,
    "resnet101_v2": resnet101_v2,
    "resnet152_v2": resnet152_v2,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "vgg11_bn": vgg11_bn,
    "vgg13_bn": vgg13_bn,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
    "alexnet": alexnet,
    "densenet121": densenet121,
    "densenet161": densenet161,
    "densenet169": densenet169,
    "densenet201": densenet201,
    "squeezenet1.0": squeezenet1_0,
    "squeezenet1.1": squeezenet1_1,
    "inceptionv3": inception_v3,
    "mobilenet1.0": mobilenet1_0,
    "mobilenet0.75": mobilenet0_75,
    "mobilenet0.5": mobilenet0_5,
    "mobilenet0.25": mobilenet0_25,
    "mobilenetv2_1.0": mobilenet_v2_1_0,
    "mobilenetv2_0.75": mobilenet_v2_0_75,
    "mobilenetv2_0.5": mobilenet_v2_0_5,
    "mobilenetv2_0.25": mobilenet_v2_0_25,
}


def model_names():
    """The names :func:`get_model` knows, sorted."""
    return sorted(_models)


def get_model(name, pretrained=False, root=None, classes=1000, **kwargs):
    """A network of Gluon's model zoo, by name.

    Parameters
    ----------
    name : str
        One of :func:`model_names` (case-insensitive): ``resnet{18,34,50,
        101,152}_v{1,2}``, ``vgg{11,13,16,19}[_bn]``, ``alexnet``,
        ``densenet{121,161,169,201}``, ``squeezenet1.{0,1}``,
        ``inceptionv3``, ``mobilenet{1.0,0.75,0.5,0.25}``,
        ``mobilenetv2_{1.0,0.75,0.5,0.25}``.
    pretrained : bool, default False
        Load MXNet's pretrained parameters from ``root``.  fastlazy never
        downloads: the file (MXNet's name ``{name}-{short sha1}.params``,
        or ``{name}.params``) must already be there, else
        FileNotFoundError says where to put it.
    root : str or os.PathLike, optional
        Folder of pretrained files; default ``$MXNET_HOME/models``
        (``~/.mxnet/models``), where MXNet keeps them.
    classes : int, default 1000
        Outputs of the classifier (the pretrained files have 1000).
    **kwargs
        Passed to the constructor (e.g. ``thumbnail`` for ResNet,
        ``prefix``).  ``ctx`` is accepted and ignored.

    Returns
    -------
    HybridBlock
        The network, parameters not initialized unless ``pretrained``:
        call ``net.initialize()`` (shapes are inferred at the first
        forward pass) or ``net.load_parameters(path)``.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the known names.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _models:
        raise ValueError(f"get_model: model {name!r} is not in the model "
                         f"zoo; known names:\n\t"
                         + "\n\t".join(model_names()))
    return _models[key](pretrained=pretrained, root=root, classes=classes,
                        **kwargs)
