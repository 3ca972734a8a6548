"""In-memory fakes of the kernel tools, for property tests of the planner.

Each fake applies the same text the real tool reads and prints state the way
the real tool prints it, and fails where the real tool fails (checked against
the real tools by the kernel tier).
"""

from tests.fakes.iproute import FakeIproute
from tests.fakes.ipset import FakeIpset, ToolError
from tests.fakes.iptables import FakeIptables
from tests.fakes.node import FakeNode

__all__ = ["FakeIproute", "FakeIpset", "FakeIptables", "FakeNode", "ToolError"]
