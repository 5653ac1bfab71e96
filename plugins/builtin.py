"""The built-in node types, registered through the ``avstream.plugins`` entry point like any plugin."""

from __future__ import annotations

from typing import Any

from avstream.engine.node import Node


def node_types() -> list[type[Node[Any]]]:
    from .captions import caption_node_types
    from .encoders import encoder_node_types
    from .localization import localization_node_types
    from .retrieval_captions import retrieval_caption_node_types
    from .sources import source_node_types
    from .violence import violence_node_types
    from .window import AVWindowNode

    return [*source_node_types(), AVWindowNode, *encoder_node_types(), *violence_node_types(), *caption_node_types(),
            *retrieval_caption_node_types(), *localization_node_types()]
