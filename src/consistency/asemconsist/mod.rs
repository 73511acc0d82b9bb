//! ASemConsist: STM, PAD, AFS.
