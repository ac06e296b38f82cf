"""Text: item texts turned into vectors by all-MiniLM-L6-v2 (torch or int8 ONNX backend), cached by content hash.

Imports: ``models.data``, ``models.files``.
"""
