"""HamGAN: class-conditional SN-ResNet generators and discriminators with a Hamburger, attention or no context
block, their data, training on the shared engine, offline metrics and the same-code comparison."""
