//! CharaConsist: masks, point matching, point-tracking attention, token merge.
