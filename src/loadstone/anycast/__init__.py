"""Anycast: VIPs announced by BGP from every instance that serves them.

loadstone speaks no BGP. It decides, per VIP (a listener or a group of
listeners bound to one address), "announce" while it serves that VIP and
"withdraw" otherwise (decision.py, with flap damping), and hands the decision
to a trusted BGP speaker: BIRD 2 through its control socket (bird.py over the
sans-IO birdc.py) or ExaBGP through its process API (exabgp.py, with the feed
process ExaBGP runs in exabgp_feed.py). manager.py runs the loop that joins
the two, and never lets a driver that fails or hangs stop the proxy.
"""
