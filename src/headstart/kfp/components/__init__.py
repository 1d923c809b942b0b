"""The pipeline's lightweight Python components: a signature (KFP's artifact and parameter types) and one call
into headstart.kfp.bodies. KFP copies each function's source into the spec; the image runs it against the
installed package, so a body imports nothing but headstart."""
