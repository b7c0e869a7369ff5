"""What a task is about: point sets (files, slices, filters) and properties (input regions, output constraints,
VNN-LIB).  Used by every layer below the language; imports nothing of patchlang but errors."""
