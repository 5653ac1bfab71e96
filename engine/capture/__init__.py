"""Media readers behind one scheme registry: files, network streams, cameras, microphones."""
