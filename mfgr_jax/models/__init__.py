"""Pure Flax modules: the classifier ResNets and (later) the DAFL generators."""
