#pragma once
// rmnet: stand-in for Gloo's header (see README.md); nothing from it is used.
