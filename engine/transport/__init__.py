"""Moving items between node processes: shared-memory frame rings, the item codec, edges."""
