"""The library's one error family.

Every failure caused by the caller's input is an :class:`EgressRulesError`. Each
subclass names the offending object (``subject``) so that a node agent can report
it without parsing the message. No function that raises one of these returns or
leaves behind partial output.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every unprintable character (line breaks, NUL, bidi controls) escaped as in a Python literal.

    Messages quote input that anyone may have written; escaped, a message stays one line on a terminal or in a log.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EgressRulesError(Exception):
    """Base class of every error the library raises on purpose.

    ``subject`` names the object at fault ("policy default/web", "node node-a",
    "config.mark_layout"); ``detail`` says what is wrong with it. Both are one
    printable line (see :func:`one_line`).
    """

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = one_line(subject)
        self.detail = one_line(detail)
        super().__init__(f"{self.subject}: {self.detail}")

    def within(self, context: str) -> EgressRulesError:
        """The same error with ``context`` (a path such as ``policies[2]``) before its subject."""
        if self.subject.startswith(context):
            return self  # already names the full path
        self.subject = f"{one_line(context)}: {self.subject}"
        self.args = (f"{self.subject}: {self.detail}",)
        return self


class InvalidInputError(EgressRulesError, ValueError):
    """The cluster state or the configuration is malformed."""


class InvalidAddressError(InvalidInputError):
    """A string is not a valid IP address or CIDR."""


class FamilyMismatchError(InvalidInputError):
    """An address of one family was given where the other is required."""


class InvalidNameError(InvalidInputError):
    """A name breaks the Kubernetes name rules or would break an output's syntax."""


class DuplicateError(InvalidInputError):
    """Two objects claim the same identity (policy key, node name, tunnel IP)."""


class UnknownNodeError(InvalidInputError):
    """A node is referenced that the cluster state does not contain."""


class EIPNotServableError(InvalidInputError):
    """A policy's egress IP uses a family that the policy cannot be routed in."""


class ConfigError(InvalidInputError):
    """The configuration is inconsistent."""


class MarkLayoutError(ConfigError):
    """The node-mark layout does not fit 32 bits or overlaps itself or the keep mark."""


class MarkConflictError(ConfigError):
    """Mark bits collide: with other software's bits, or two nodes share a mark."""


class AllocationError(EgressRulesError):
    """An allocator cannot satisfy a request."""


class MarkExhaustedError(AllocationError):
    """Every node-mark value of the layout is taken."""


class TableExhaustedError(AllocationError):
    """Every routing table of the configured range is taken on this node."""


class NameCollisionError(EgressRulesError):
    """Two distinct objects hash to the same kernel object name."""


class UnsupportedError(EgressRulesError):
    """A backend cannot express part of the rule set faithfully."""


class ParseError(EgressRulesError):
    """Observed-state text could not be parsed; ``subject`` names the source and line."""

    def __init__(self, subject: str, detail: str, line: int | None = None) -> None:
        self.line = line
        where = f"{subject} line {line}" if line is not None else subject
        super().__init__(where, detail)


class ResourceError(InvalidInputError):
    """A Kubernetes resource given to an adapter is malformed.

    ``resource`` names it (``EgressPolicy default/web``, or its place in the input
    while it has no name yet) and ``field`` is the path inside it
    (``spec.destSubnet[2]``), or ``None`` when the resource as a whole is at fault.
    """

    def __init__(self, resource: str, field: str | None, detail: str) -> None:
        self.resource = resource
        self.field = field
        super().__init__(resource if field is None else f"{resource}: {field}", detail)


class TraceError(EgressRulesError):
    """The tracer met something it cannot evaluate exactly (an unknown match, action or chain)."""
