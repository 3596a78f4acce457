"""Where MXNet 1.x keeps some of Gluon: ``fl.contrib.nn``."""
