"""Network safety shared by every outgoing request: one strict URL parser, one redirect loop, deadlines, the address guard."""
