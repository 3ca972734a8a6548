"""Adapters: read other software's representation of the cluster into the library's input.

:mod:`egress_rules.adapters.egressgateway` reads the spidernet-io/egressgateway
custom resources as ``kubectl get -o json`` (or ``-o yaml``) prints them.
"""

from egress_rules.adapters.egressgateway import LoadResult, load_resource_text, load_resources

__all__ = ["LoadResult", "load_resource_text", "load_resources"]
