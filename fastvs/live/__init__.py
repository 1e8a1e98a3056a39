"""The live path: ``fastvs forward``, the engine on raw sockets between real interfaces."""
