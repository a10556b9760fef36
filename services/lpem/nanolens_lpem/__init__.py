"""Liquid-phase EM: nanoparticle segmentation, tracking and dynamics in movies."""
