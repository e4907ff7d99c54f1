"""Parsing untrusted XML with the standard library only: expat into an ElementTree, DTDs refused.

defusedxml is no dependency of ours; what it guards against needs a DTD (entity expansion such as
"billion laughs", external entities), so a document that declares one (``<!DOCTYPE``, entity or
notation declarations) is refused before any entity is defined. Plain documents (Pascal VOC
annotations) never have one.
"""

from __future__ import annotations

from xml.etree import ElementTree
from xml.parsers import expat


class BadXml(ValueError):
    """The document is not well-formed XML, or declares a DTD; the message is one line."""


def parse_xml(data: bytes) -> ElementTree.Element:
    """The root element of the document ``data``; BadXml when it is invalid or has a DTD."""
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()

    def refuse(*_: object) -> None:
        raise BadXml("it declares a DTD or entities (<!DOCTYPE>), which are refused")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.NotationDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except expat.ExpatError as error:
        raise BadXml(f"not valid XML ({error})") from None
