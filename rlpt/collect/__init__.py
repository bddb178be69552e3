"""Collection: rolling policies out in envs to make data — offline datasets (`generate`), the behaviour policies
they come from (`behavior`), and rendered video sets for video pretraining (`video_render`).

This layer sits above data, nets and envs (it imports them) and below the learners; nothing in data, nets or
envs imports it.
"""
